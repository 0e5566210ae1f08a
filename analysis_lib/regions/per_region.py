"""One indexed query per region: the classic loop, values only, through the spatial index."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .._checks import check_positive_int
from .core import Partials, Spec, Strategy, fields_of

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from django.db.models import QuerySet

__all__ = ["PerRegion", "region_querysets"]


def _lookup(name: str, stock: str) -> str:
    """``name`` when registered on GeometryField (the analysis_lib app is installed), else stock."""
    from django.contrib.gis.db.models import GeometryField

    return name if GeometryField.get_lookups().get(name) is not None else stock


def region_querysets(
    regions: QuerySet, region_frame: pd.DataFrame, items: QuerySet, spec: Spec
) -> Iterator[tuple[Any, QuerySet]]:
    """Yield ``(key, the items of that region)`` in the region frame's order.

    Uses ``within_indexed``/``bboverlaps_indexed`` (registered by the ``analysis_lib`` app;
    the spatial index on SpatiaLite) when available, else the stock lookups.
    """
    import shapely
    from django.contrib.gis.db.models.functions import Centroid
    from django.contrib.gis.geos import GEOSGeometry
    from django.db.models import Exists, OuterRef, Q

    from .core import regions_in_item_srid

    geom = spec.item_geometry
    within = _lookup("within_indexed", "within")
    overlaps = _lookup("bboverlaps_indexed", "bboverlaps")
    transformed, region_geom = regions_in_item_srid(regions, spec)
    for key, shape in zip(region_frame.index, region_frame["geom"], strict=True):
        # The region in the items' SRID, as the database transformed it (exact WKB).
        region = GEOSGeometry(memoryview(shapely.to_wkb(shape)), srid=spec.item_srid)
        if spec.predicate == "within":
            yield key, items.filter(**{f"{geom}__{within}": region})
            continue
        # Centroid: interior, or on the border when no region earlier in key order holds it.
        earlier = transformed.filter(
            **{f"{spec.key}__lt": key, f"{region_geom}__intersects": OuterRef("_centroid")}
        )
        yield (
            key,
            items.filter(**{f"{geom}__{overlaps}": region})
            .annotate(_centroid=Centroid(geom))
            .filter(
                Q(_centroid__within=region)
                | (Q(_centroid__touches=region) & ~Exists(earlier.values("pk")))
            ),
        )


class PerRegion(Strategy):
    """One query per region with the index-aware lookup, values only (the reference).

    ``<geometry>__within_indexed`` (``bboverlaps_indexed`` plus a centroid test for
    ``"centroid"``) when the ``analysis_lib`` app is installed, else the stock lookups (a full
    table scan per region on SpatiaLite). Rows are read with DB-API: the region parameter
    cannot be bound by ADBC.

    Parameters
    ----------
    chunk_size : int
        Rows per fetch within a region (default 10,000).

    Examples
    --------
    >>> from analysis_lib import PerRegion
    >>> PerRegion()
    PerRegion(chunk_size=10000)
    """

    def __init__(self, chunk_size: int = 10_000) -> None:
        check_positive_int("chunk_size", chunk_size)
        self.chunk_size = chunk_size

    def __repr__(self) -> str:
        return f"PerRegion(chunk_size={self.chunk_size})"

    def describe(self) -> str:
        """Label for progress bars and memory logs."""
        return "per-region"

    def run(
        self,
        regions: QuerySet,
        region_frame: pd.DataFrame,
        items: QuerySet,
        spec: Spec,
        progress: bool,
    ) -> Mapping[str, Any]:
        """One query per region; return raw aggregates in region order."""
        import numpy as np
        from tqdm.auto import tqdm

        from ..loaders import read_frame

        n = len(region_frame)
        total = Partials(n, spec)
        fields = fields_of(spec) or ["pk"]
        for pos, (_key, queryset) in enumerate(
            tqdm(
                region_querysets(regions, region_frame, items, spec),
                total=n,
                unit="region",
                desc=f"per-region ({spec.predicate})",
                disable=not progress,
            )
        ):
            frame = read_frame(
                queryset.order_by(), fields, chunk_size=self.chunk_size, engine="dbapi"
            )
            region_idx = np.full(len(frame), pos, dtype=np.int64)
            total.merge(Partials.from_rows(n, spec, region_idx, frame))
        return total.raw(spec)
