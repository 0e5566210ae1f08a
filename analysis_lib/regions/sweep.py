"""The streaming sweep: one pass over the items, chunks matched to every region at once."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from .._checks import check_choice, check_positive_int, fail_type, fail_value
from ..loaders import run_with_engine
from ..loaders._engine import ENGINES
from .core import Spec, Strategy, Totals, match_boxes, trim_heap

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from django.db.models import QuerySet

    from ._blobs import Chunk

__all__ = ["Sweep"]


class Sweep(Strategy):
    """One streaming pass over the items, matched chunk by chunk to every region (the default).

    Each chunk is matched in two steps: a raster of the regions places every item whose
    bounding box lies in cells of a single region, or of none, from the box alone; the items
    near a border are decoded with shapely and matched with an ``STRtree`` queried by the
    prepared regions. Both steps are exact. On SpatiaLite the stored geometry blobs are read
    (no ``AsBinary`` per row), the boxes taken from their headers and WKB built only for the
    items GEOS decides; elsewhere the chunks come from :func:`~analysis_lib.iter_frames` with
    WKB. Matched rows are added into running per-region totals. With ADBC the next batch is
    read by a background thread while the calling thread matches the current one
    (``docs/per-region.md``, "How the sweep works"). Memory: a few chunks, the raster (4 MB),
    per-region totals, and at most 4 MiB of values for each exact median of a float field
    (spilled to a temporary file past that).

    Parameters
    ----------
    chunk_size : int
        Rows per fetch (default 10,000).
    workers : int, optional
        Extra threads matching chunks while the calling thread reads the next one; 0 or
        ``None`` (default) matches in the calling thread (measured as fast: with ADBC the
        reading already overlaps, in its own thread).
    engine : {"auto", "dbapi", "adbc"}
        How the rows are read (see :func:`~analysis_lib.iter_frames`); ``"auto"`` uses ADBC
        when it can and falls back to DB-API, restarting the pass if ADBC fails part-way. On
        SpatiaLite, where pyarrow is kept out (:func:`~analysis_lib.keep_pyarrow_out`) or not
        installed, ADBC is read through ``nanoarrow`` instead of pyarrow.

    Raises
    ------
    TypeError
        If an argument has the wrong type.
    ValueError
        If ``chunk_size`` is below 1, ``workers`` below 0 or ``engine`` unknown.

    Examples
    --------
    >>> from analysis_lib import Sweep
    >>> Sweep(chunk_size=20_000, workers=0)
    Sweep(chunk_size=20000, workers=0, engine='auto')
    """

    def __init__(
        self,
        chunk_size: int = 10_000,
        workers: int | None = None,
        engine: Literal["auto", "dbapi", "adbc"] = "auto",
    ) -> None:
        check_positive_int("chunk_size", chunk_size)
        if workers is not None:
            if isinstance(workers, bool) or not isinstance(workers, int):
                raise fail_type("workers", "a non-negative int or None", workers)
            if workers < 0:
                raise fail_value("workers", "a non-negative int or None", workers)
        check_choice("engine", engine, ENGINES)
        self.chunk_size = chunk_size
        self.workers = workers
        self.engine = engine

    def __repr__(self) -> str:
        return (
            f"Sweep(chunk_size={self.chunk_size}, workers={self.workers}, engine={self.engine!r})"
        )

    def describe(self) -> str:
        """Label for progress bars and memory logs."""
        return "sweep"

    def run(
        self,
        regions: QuerySet,
        region_frame: pd.DataFrame,
        items: QuerySet,
        spec: Spec,
        progress: bool,
    ) -> Mapping[str, Any]:
        """Stream the items once; return raw aggregates in region order."""
        import shapely
        from tqdm.auto import tqdm

        from .._geo import RegionGrid
        from ._chunks import frame_chunks, nano_reads, spatialite_chunks, spatialite_reason

        n = len(region_frame)
        boundaries = region_frame["geom"].to_numpy()
        threads = self.workers or 0
        local = threading.local()
        # GEOS prepared geometries build their indexes lazily and are not safe to share between
        # threads: with matching threads each gets its own prepared copy (from WKB); matched in
        # the calling thread only, the regions' own geometries are prepared, no copy (30,003
        # ZIP codes: 21 MiB of geometries and their prepared indexes less).
        region_wkb = shapely.to_wkb(boundaries) if threads else None

        def prepared_regions():
            geoms = getattr(local, "regions", None)
            if geoms is None:
                geoms = shapely.from_wkb(region_wkb) if threads else boundaries
                shapely.prepare(geoms)
                local.regions = geoms
            return geoms

        grid = RegionGrid(boundaries)
        # SpatiaLite: the stored blobs, boxes from their headers; elsewhere iter_frames' WKB.
        raw = spatialite_reason(items, spec) is None
        read = spatialite_chunks if raw else frame_chunks
        # Without pyarrow the raw read's ADBC engine is nanoarrow's; iter_frames' needs pyarrow.
        arrow_free = raw and nano_reads()

        def work(chunk: Chunk) -> tuple[Any, dict[str, Any]]:
            region_idx, rows = match_boxes(
                chunk.bounds,
                chunk.wkb_of,
                prepared_regions(),
                grid,
                spec.predicate,
                spec.item_geom_type,
            )
            return region_idx, {name: column[rows] for name, column in chunk.values.items()}

        def one_pass(engine: str) -> Totals:
            total = Totals(n, spec)
            bar = tqdm(
                total=items.count() if progress else None,
                unit="item",
                unit_scale=True,
                desc=f"sweep ({spec.predicate})",
                disable=not progress,
            )
            chunks = read(items, spec, total.vocabulary, self.chunk_size, engine)
            try:
                if threads == 0:
                    for chunk in chunks:
                        total.add(*work(chunk))
                        bar.update(chunk.n)
                    return total
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sweep") as pool:
                    # At most `threads` chunks in flight while the next one is read.
                    pending: deque = deque()
                    for chunk in chunks:
                        pending.append((pool.submit(work, chunk), chunk.n))
                        del chunk
                        while len(pending) > threads:
                            future, n_rows = pending.popleft()
                            total.add(*future.result())
                            bar.update(n_rows)
                    while pending:
                        future, n_rows = pending.popleft()
                        total.add(*future.result())
                        bar.update(n_rows)
                return total
            except BaseException:
                total.close()
                raise
            finally:
                # Now, not when a traceback kept for a notebook lets go of the generator: it
                # stops the ADBC read-ahead thread and closes the cursor and connection.
                chunks.close()
                bar.close()

        try:
            return run_with_engine(self.engine, one_pass, arrow_free=arrow_free).raw(spec)
        finally:
            trim_heap()
