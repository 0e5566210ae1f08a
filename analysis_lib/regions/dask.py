"""The sweep on a Dask cluster: primary-key ranges of the items, matched where they are read."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._checks import check_positive_int, fail_type, fail_value
from .core import Partials, Spec, Strategy, fields_of, match_chunk

if TYPE_CHECKING:  # pragma: no cover
    import distributed
    import pandas as pd
    from django.db.models import QuerySet

__all__ = ["DaskSweep"]


def _ranges(items: QuerySet, npartitions: int) -> list[Any]:
    """Return the primary-key ranges of ``items`` (the one place this module asks for them)."""
    from ..loaders import pk_ranges

    return pk_ranges(items, npartitions)


def _partials_for_range(bounds: Any, source: Any, regions: tuple[Any, Any], spec: Spec) -> Partials:
    """In a worker: stream one primary-key range, match each chunk, return merged partials."""
    import shapely

    from .._dask import _worker_queryset
    from ..loaders import in_range, iter_frames

    region_wkb, grid = regions
    geoms = shapely.from_wkb(region_wkb)  # prepared per task: GEOS prepared geometries are
    shapely.prepare(geoms)  # not safe to share between a worker's threads
    n = len(geoms)
    total = Partials(n, spec)
    with _worker_queryset(source) as queryset:
        frames = iter_frames(
            in_range(queryset, bounds).order_by(),
            list(source.fields),
            source.chunk_size,
            geometry="wkb",
        )
        for frame in frames:
            region_idx, rows = match_chunk(
                frame[spec.item_geometry].to_numpy(),
                geoms,
                grid,
                spec.predicate,
                spec.item_geom_type,
            )
            total.merge(Partials.from_rows(n, spec, region_idx, frame, rows))
    return total


class DaskSweep(Strategy):
    """The sweep with the items spread over a Dask cluster (the ``dask`` extra).

    The client loads the regions, builds the region raster of :class:`Sweep` and sends both
    once to every worker. The items are cut into ``npartitions`` primary-key ranges; each
    worker streams its ranges (``chunk_size`` rows at a time, on its own database connection),
    matches each chunk exactly as the sweep does and returns partial aggregates, merged by the
    client in key order: the same counts, extremes and medians as :class:`Sweep`, sums equal up
    to floating-point summation order. Workers see only committed rows, and cannot read an
    in-memory SQLite database.

    Parameters
    ----------
    client : distributed.Client, optional
        The cluster; default the current client (``distributed.default_client()``).
    npartitions : int, optional
        Primary-key ranges to split the items into; default four per worker thread.
    chunk_size : int
        Rows per fetch in a worker (default 50,000).

    Raises
    ------
    TypeError
        If ``client`` is not a ``distributed.Client`` or a number is not an int.
    ValueError
        If a number is below 1.

    Examples
    --------
    >>> from analysis_lib import DaskSweep
    >>> DaskSweep(npartitions=8)
    DaskSweep(client=None, npartitions=8, chunk_size=50000)
    """

    def __init__(
        self,
        client: distributed.Client | None = None,
        npartitions: int | None = None,
        chunk_size: int = 50_000,
    ) -> None:
        check_positive_int("npartitions", npartitions, allow_none=True)
        check_positive_int("chunk_size", chunk_size)
        if client is not None:
            from .._dask import _import_distributed

            dist = _import_distributed("DaskSweep")
            if not isinstance(client, dist.Client):
                raise fail_type("client", "a distributed.Client or None", client)
        self.client = client
        self.npartitions = npartitions
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return (
            f"DaskSweep(client={self.client!r}, npartitions={self.npartitions}, "
            f"chunk_size={self.chunk_size})"
        )

    def describe(self) -> str:
        """Label for progress bars and memory logs."""
        return "dask sweep"

    def run(
        self,
        regions: QuerySet,
        region_frame: pd.DataFrame,
        items: QuerySet,
        spec: Spec,
        progress: bool,
    ) -> Mapping[str, Any]:
        """Run the sweep on the cluster; return raw aggregates in region order."""
        import shapely
        from tqdm.auto import tqdm

        from .._dask import _check_queryset, _import_distributed, _make_source
        from .._geo import RegionGrid

        dist = _import_distributed("DaskSweep")
        client = self.client
        if client is None:
            try:
                client = dist.default_client()
            except ValueError:
                raise fail_value(
                    "client",
                    "a dask.distributed Client (pass DaskSweep(client=Client(...)) or start one "
                    "first)",
                    None,
                ) from None
        items = items.order_by()
        _check_queryset(items, "DaskSweep")
        npartitions = self.npartitions or 4 * max(1, sum(client.nthreads().values()))
        ranges = _ranges(items, npartitions)
        source = _make_source(items, fields_of(spec, [spec.item_geometry]), "wkb", self.chunk_size)
        boundaries = region_frame["geom"].to_numpy()
        # The regions (WKB) and their raster go to every worker once.
        [regions_data] = client.scatter(
            [(shapely.to_wkb(boundaries), RegionGrid(boundaries))], broadcast=True
        )
        futures = client.map(
            _partials_for_range,
            ranges,
            source=source,
            regions=regions_data,
            spec=spec,
            pure=False,
        )
        pending = deque(futures)
        del futures
        total = Partials(len(region_frame), spec)
        bar = tqdm(total=len(pending), unit="part", desc="dask partitions", disable=not progress)
        try:
            # In key order, so the floating-point sums do not depend on which worker finished.
            while pending:
                future = pending.popleft()
                total.merge(future.result())
                bar.update()
                del future
        finally:
            bar.close()
            if pending:  # an error or Ctrl-C: do not leave the rest running
                client.cancel(list(pending))
            client.cancel([regions_data])
        return total.raw(spec)
