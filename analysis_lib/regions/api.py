"""The public per-region functions: a summary per region, the items per region, a map."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from .._checks import check_choice, check_names, check_positive_int, fail_value
from .core import (
    PREDICATES,
    Partials,
    Predicate,
    Strategy,
    check_strategy,
    finish,
    load_regions,
    resolve,
)
from .core import step as _step

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from django.db.models import QuerySet
    from matplotlib.axes import Axes

    from ..memory import MemoryLog

__all__ = ["iter_items_by_region", "plot_choropleth", "summarize_by_region"]


def summarize_by_region(
    regions: QuerySet,
    items: QuerySet,
    *,
    key: str = "pk",
    aggregates: Mapping[str, tuple[str, str]] | None = None,
    predicate: Predicate = "within",
    strategy: Strategy | None = None,
    region_geometry: str | None = None,
    item_geometry: str | None = None,
    progress: bool = False,
    log: MemoryLog | None = None,
) -> pd.DataFrame:
    """Summarise the items of every region: a count, the aggregates asked for, area and density.

    Works on any two GeoDjango models: regions with a ``Polygon``/``MultiPolygon`` field,
    items with a ``Point``, ``Polygon`` or ``MultiPolygon`` field, in any SRIDs (the regions are
    transformed to the items' SRID by the database, as GeoDjango's lookups do).

    Which items belong to a region (``predicate``):

    ``"within"`` (default)
        GeoDjango's ``<item geometry>__within=<region>``: an item lies within the region (edges
        on the border allowed). An item straddling the border of two regions, or a point on a
        border, belongs to **neither**.
    ``"centroid"``
        The region whose area, interior or border, holds the item's centroid; a centroid
        exactly on a border shared by two regions goes to the first region in key order.

    How (``strategy``; every strategy gives the same table, the tests check it):
    :class:`~analysis_lib.Sweep` (default: one streaming pass), :class:`~analysis_lib.PerRegion`
    (one indexed query per region), :class:`~analysis_lib.OneStatement` (one SQL statement),
    :class:`~analysis_lib.DaskSweep` (the sweep on a Dask cluster).

    Parameters
    ----------
    regions : QuerySet
        The regions (filtered or sliced as you like).
    items : QuerySet
        The items to assign; filtered, not sliced.
    key : str
        A field of the regions with unique values: the index of the result (default ``"pk"``).
        Regions come in the database's order of this field.
    aggregates : dict, optional
        ``{output column: (item field, how)}``. For a numeric field ``how`` is ``"sum"``,
        ``"mean"``, ``"median"`` (exact), ``"min"`` or ``"max"`` (NULLs ignored); for a field
        with choices or a text field, ``"counts"`` or ``"shares"``: one column
        ``<output column>_<value>`` per value (the choices, in declaration order, or the values
        found, sorted). Shares are of all matched items (NULLs and values outside the choices
        count in the total, in no share).
    predicate : {"within", "centroid"}
        Which items belong to a region (see above).
    strategy : Strategy, optional
        How to compute it; default ``Sweep()``.
    region_geometry, item_geometry : str, optional
        The geometry field to use when a model has several.
    progress : bool
        Show a tqdm progress bar.
    log : MemoryLog, optional
        Measure loading the regions and the analysis with :func:`~analysis_lib.memory_step`.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``key``, one row per region, empty regions included: ``n_items``, the
        aggregate columns (``sum`` is 0 for an empty region, the other statistics and the
        shares NaN), ``area_km2`` (equal-area projection EPSG:6933) and ``items_per_km2``.

    Raises
    ------
    TypeError
        If ``regions``/``items`` is not a QuerySet, or an argument has the wrong type.
    ValueError
        If a field name, ``key``, ``predicate`` or an aggregate is not valid for the models
        (checked before any query), ``items`` is sliced, or the key values are not unique.
    RuntimeError
        For :class:`~analysis_lib.OneStatement` on SpatiaLite without the items' spatial index.

    Examples
    --------
    >>> from analysis_lib import summarize_by_region, Sweep
    >>> summary = summarize_by_region(  # doctest: +SKIP
    ...     Neighborhood.objects.all(), Tree.objects.all(), key="name",
    ...     aggregates={"planted_median": ("planted", "median"), "share": ("species", "shares")},
    ...     strategy=Sweep(chunk_size=20_000),
    ... )
    """
    if strategy is None:
        from .sweep import Sweep

        strategy = Sweep()
    check_strategy(strategy)
    regions_qs, items_qs, spec = resolve(
        regions,
        items,
        key=key,
        aggregates=aggregates,
        predicate=predicate,
        region_geometry=region_geometry,
        item_geometry=item_geometry,
    )
    with _step("per-region: load regions", log):
        region_frame = load_regions(regions_qs, spec)
    with _step(f"per-region: {strategy.describe()} ({predicate})", log):
        if region_frame.empty:  # nothing to match against: no query over the items
            raw = Partials(0, spec).raw(spec)
        else:
            raw = strategy.run(regions_qs, region_frame, items_qs, spec, progress)
    return finish(raw, region_frame, spec)


def iter_items_by_region(
    regions: QuerySet,
    items: QuerySet,
    fields: Sequence[str],
    *,
    key: str = "pk",
    predicate: Predicate = "within",
    region_geometry: str | None = None,
    item_geometry: str | None = None,
    geometry: Literal["shapely", "wkb"] = "shapely",
    chunk_size: int = 20_000,
    progress: bool = False,
) -> Iterator[tuple[Any, pd.DataFrame]]:
    """Yield ``(key, DataFrame)`` for each region: its items, only the requested columns.

    The drop-in replacement for the classic loop::

        for name, frame in iter_items_by_region(hoods, Tree.objects.all(), ["species"],
                                                key="name"):
            ...  # frame: this neighbourhood's trees, one row each

    One query per region with the index-aware lookup (``within_indexed`` when the
    ``analysis_lib`` app is installed), read with :func:`~analysis_lib.read_frame`, values
    only: memory is bounded by one region's frame plus one fetch chunk. Rows come in
    primary-key order; regions in key order, empty ones included (an empty frame with the
    right columns). The ``predicate`` rules of :func:`summarize_by_region` apply.

    Parameters
    ----------
    regions, items : QuerySet
        As for :func:`summarize_by_region`.
    fields : sequence of str
        Item columns, as for ``QuerySet.values()`` (related lookups allowed).
    key, predicate, region_geometry, item_geometry
        As for :func:`summarize_by_region`.
    geometry : {"shapely", "wkb"}
        How a requested geometry column arrives.
    chunk_size : int
        Rows per fetch within a region.
    progress : bool
        Show a tqdm progress bar over the regions.

    Yields
    ------
    tuple
        The region's key and its items.

    Raises
    ------
    TypeError, ValueError
        For a bad argument, checked before the first query (before the first ``next()``).

    Examples
    --------
    >>> for name, frame in iter_items_by_region(  # doctest: +SKIP
    ...         Neighborhood.objects.all(), Tree.objects.all(), ["species"], key="name"):
    ...     print(name, len(frame))
    """
    check_choice("predicate", predicate, PREDICATES)
    check_choice("geometry", geometry, ("shapely", "wkb"))
    check_positive_int("chunk_size", chunk_size)
    fields = check_names("fields", fields)
    regions_qs, items_qs, spec = resolve(
        regions,
        items,
        key=key,
        aggregates=None,
        predicate=predicate,
        region_geometry=region_geometry,
        item_geometry=item_geometry,
    )
    from django.core.exceptions import FieldError

    try:
        items_qs.values(*fields).query.get_compiler(items_qs.db).as_sql()
    except FieldError as exc:
        raise fail_value("fields", f"fields of {items_qs.model.__name__} ({exc})", fields) from exc
    return _iter(regions_qs, items_qs, spec, fields, geometry, chunk_size, progress)


def _iter(regions, items, spec, fields, geometry, chunk_size, progress):
    """Generate what :func:`iter_items_by_region` (arguments already checked)."""
    from tqdm.auto import tqdm

    from ..loaders import read_frame
    from .per_region import region_querysets

    region_frame = load_regions(regions, spec)
    for key, queryset in tqdm(
        region_querysets(regions, region_frame, items, spec),
        total=len(region_frame),
        unit="region",
        desc="regions",
        disable=not progress,
    ):
        yield (
            key,
            read_frame(
                queryset.order_by("pk"),
                fields,
                chunk_size=chunk_size,
                geometry=geometry,
                engine="dbapi",  # the region parameter cannot be bound by ADBC
            ),
        )


def plot_choropleth(
    summary: pd.DataFrame,
    regions: QuerySet,
    column: str = "items_per_km2",
    ax: Axes | None = None,
    *,
    key: str | None = None,
    region_geometry: str | None = None,
    cmap: str = "viridis",
    log_scale: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw a choropleth map of one summary column by region (matplotlib only, no geopandas).

    Parameters
    ----------
    summary : pandas.DataFrame
        A table indexed by region key, such as :func:`summarize_by_region` returns.
    regions : QuerySet
        Where the shapes come from; only the regions whose key is in ``summary`` are drawn.
    column : str
        The column to map (default ``"items_per_km2"``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    key : str, optional
        The regions' key field; default the name of ``summary``'s index (``"pk"`` if unnamed
        or the primary key's name).
    region_geometry : str, optional
        The geometry field when the regions' model has several.
    cmap : str
        Matplotlib colormap name.
    log_scale : bool
        Logarithmic colour scale (default). Regions with a value of 0 or NaN are light grey.
    title : str, optional
        Axes title (default: the column name).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValueError
        If ``column`` is not in ``summary``, or no region of ``summary`` has a shape.

    Examples
    --------
    >>> ax = plot_choropleth(summary, Neighborhood.objects.all())  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import shapely
    from matplotlib.collections import PathCollection
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.path import Path

    from ..loaders import read_frame
    from .core import _geometry_field

    if column not in summary.columns:
        raise fail_value("column", f"a column of the summary {list(summary.columns)}", column)
    from .._checks import check_queryset

    check_queryset("regions", regions)
    if key is None:
        name = summary.index.name
        key = "pk" if name in (None, regions.model._meta.pk.name) else name
    geom = _geometry_field(
        regions.model, region_geometry, "region_geometry", ("polygon", "multipolygon")
    )
    frame = read_frame(
        regions.order_by().filter(**{f"{key}__in": list(summary.index)}),
        [key, geom.name],
        geometry="shapely",
        engine="dbapi",
    ).set_index(key)
    shapes = frame[geom.name]
    if shapes.empty:
        raise fail_value("regions", "regions holding the keys of the summary", regions)
    values = summary[column].reindex(shapes.index).astype(float)

    def to_path(g) -> Path:
        rings = []
        for polygon in shapely.get_parts(g):
            rings.append(shapely.get_exterior_ring(polygon))
            rings.extend(
                shapely.get_interior_ring(polygon, i)
                for i in range(shapely.get_num_interior_rings(polygon))
            )
        return Path.make_compound_path(
            *(Path(shapely.get_coordinates(ring), closed=True) for ring in rings)
        )

    drawable = np.isfinite(values.to_numpy()) & ((values > 0).to_numpy() if log_scale else True)
    colormap = plt.get_cmap(cmap)
    colors = np.tile([0.85, 0.85, 0.85, 1.0], (len(values), 1))  # light grey: 0 or no value
    if drawable.any():
        norm_class = LogNorm if log_scale else Normalize
        norm = norm_class(vmin=float(values[drawable].min()), vmax=float(values[drawable].max()))
        colors[drawable] = colormap(norm(values[drawable].to_numpy()))
    else:
        norm = Normalize(vmin=0.0, vmax=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 7))
    ax.add_collection(
        PathCollection(
            [to_path(g) for g in shapes], facecolors=colors, edgecolors="white", linewidths=0.2
        )
    )
    xmin, ymin, xmax, ymax = shapely.total_bounds(shapes.to_numpy())
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    from pyproj import CRS

    if CRS.from_epsg(int(geom.srid)).is_geographic:
        # Degrees of longitude are shorter than degrees of latitude away from the equator.
        ax.set_aspect(1.0 / np.cos(np.radians((ymin + ymax) / 2.0)))
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
    else:
        ax.set_aspect("equal")
    ax.figure.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=colormap), ax=ax, label=column, shrink=0.8
    )
    ax.set_title(title if title is not None else column)
    return ax
