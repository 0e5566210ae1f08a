"""The public loaders: thin fronts over one chunked path.

:func:`iter_frames` yields chunks; :func:`read_frame` concatenates the same chunks (read in
primary-key ranges at once where that applies); :func:`read_geodataframe` wraps read_frame's
frame for geopandas. The engine is chosen by :func:`~._engine.run_with_engine`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .._checks import check_positive_int
from ._adbc import iter_adbc, read_parallel
from ._dbapi import iter_dbapi
from ._engine import Engine, run_with_engine
from ._plan import DEFAULT_CHUNK_SIZE, GeometryFormat, Plan, check_arguments, make_plan

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import geopandas
    import pandas as pd
    from django.db.models import QuerySet

__all__ = ["iter_frames", "read_frame", "read_geodataframe"]


def _primed(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Fetch the first chunk now (so a refusal is raised here), then hand the chunks on."""
    first = next(frames)

    def chunks() -> Iterator[pd.DataFrame]:
        nonlocal first
        frame, first = first, None
        yield frame
        frame = None  # hold nothing while the consumer works on the chunk
        yield from frames

    return chunks()


def _iter_chunks(
    plan: Plan, chunk_size: int, progress: bool, engine: str
) -> Iterator[pd.DataFrame]:
    """Yield the chunks of one engine, chosen (with its fallback) at the first ``next()``."""

    def run(name: str) -> Iterator[pd.DataFrame]:
        if name == "dbapi" or plan.sql is None:
            return _primed(iter_dbapi(plan, chunk_size, progress))
        # "auto" keeps iter_frames on DB-API (see refusal() in _adbc).
        frames = iter_adbc(plan, chunk_size, progress, iterating_auto=engine == "auto")
        return _primed(frames)

    yield from run_with_engine(engine, run)


def _read_all(
    queryset: QuerySet,
    fields: Sequence[str] | None,
    plan: Plan,
    chunk_size: int,
    progress: bool,
    engine: str,
    parallel: int | None,
) -> pd.DataFrame:
    """Read the whole result into one frame: the chunks of one engine, concatenated."""

    def run(name: str) -> list[pd.DataFrame]:
        if name == "dbapi" or plan.sql is None:
            return list(iter_dbapi(plan, chunk_size, progress))
        frames = read_parallel(queryset, fields, plan, chunk_size, progress, parallel)
        if frames is None:
            frames = list(iter_adbc(plan, chunk_size, progress, whole=True))
        return frames

    with _gc_paused():
        return _concat(run_with_engine(engine, run))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while chunks pile up, then restore it.

    Every shapely geometry is a GC-tracked object: while a million of them accumulate, each
    full collection walks all of them again (measured: read_frame with geometry ~1.6x slower).
    Nothing the loader builds has reference cycles, so nothing is left for the GC to find.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate chunks, keeping categorical columns categorical."""
    import pandas as pd

    if len(frames) == 1:
        return frames[0]
    for name in frames[0].columns:
        dtypes = [f[name].dtype for f in frames]
        if isinstance(dtypes[0], pd.CategoricalDtype) and any(d != dtypes[0] for d in dtypes):
            # A chunk met values outside the choices: give every chunk the same categories.
            categories = list(dict.fromkeys(c for d in dtypes for c in d.categories))
            for f in frames:
                f[name] = f[name].cat.set_categories(categories)
    if int(pd.__version__.split(".", 1)[0]) >= 3:  # copy-on-write: concat copies lazily
        return pd.concat(frames, ignore_index=True)
    return pd.concat(frames, ignore_index=True, copy=False)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------


def iter_frames(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    geometry: GeometryFormat = "shapely",
    progress: bool = False,
    engine: Engine = "auto",
) -> Iterator[pd.DataFrame]:
    """Yield a QuerySet's rows as pandas DataFrames of at most ``chunk_size`` rows.

    The queryset is compiled to SQL (with its parameters) and read with a
    chunked cursor: a server-side cursor on PostgreSQL, ``fetchmany`` on
    SQLite. No model instances are built and the loader holds one chunk of
    rows at a time, so memory does not grow with the size of the table.

    Column dtypes come from the model fields: ``int64`` (``Int64`` when the
    column can be NULL: a nullable field, a field reached through a LEFT JOIN,
    or an annotation), ``float64``, ``bool``/``boolean``, text as ``object`` on
    pandas 2 and ``str`` on pandas 3 (whatever pandas itself infers for text),
    ``category`` with the field's choices as categories (the same in every chunk),
    ``datetime64[ns, UTC]`` for ``DateTimeField`` (naive when
    ``USE_TZ`` is off), ``datetime64[ns]`` for ``DateField``; foreign keys
    give the related id. Geometry columns are selected as WKB and decoded by
    ``shapely.from_wkb`` on the whole column. Other fields (decimals, UUIDs,
    JSON, ...) keep Django's own conversion, as ``object`` columns. The dtypes are
    the same for every chunk, for an empty result, and on both engines
    (the table: ``docs/loaders.md``).

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet: filtered, ordered, annotated, sliced. Its ordering is
        kept. A queryset made with ``values(...)``/``values_list(...)`` is
        accepted: with ``fields=None`` its columns are used as they are.
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``: concrete fields (``"zip"``
        or ``"zip_id"`` give the foreign key's id), related lookups
        (``"zip__code"``) and annotation names. Columns are named as given.
        ``None`` selects what ``.values()`` gives: every concrete field
        (foreign keys as ``"<name>_id"``) and the queryset's annotations.
    chunk_size : int, default 50_000
        Rows per DataFrame (the last one may be shorter).
    geometry : {"shapely", "wkb"}, default "shapely"
        Geometry columns as shapely geometries, or as the WKB ``bytes``.
    progress : bool, default False
        Show a tqdm progress bar; it runs one extra ``COUNT`` query for the total.
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        ``"dbapi"``: Django's cursor. ``"adbc"``: an Arrow-native second
        connection (packages ``adbc-driver-sqlite``/``adbc-driver-postgresql``),
        faster on plain columns; it cannot see uncommitted writes, so it is
        refused inside ``transaction.atomic()`` and on in-memory SQLite.
        ``"auto"``: DB-API for ``iter_frames`` (it holds exactly one chunk;
        see docs/loaders.md); ``read_frame`` uses ADBC when installed and allowed. Results are the
        same values and dtypes either way. On PostgreSQL the ADBC driver streams with ``COPY``,
        which takes no parameters: a filter's parameters are bound as literals by the database
        driver's own quoting (Django's ``compose_sql``); a str parameter holding a NUL byte
        raises ValueError (PostgreSQL text cannot hold one).

    Returns
    -------
    Iterator[pandas.DataFrame]
        One DataFrame per chunk, indexed by row number in the whole result
        (the second chunk of 1,000 starts at 1000). An empty result yields a
        single empty DataFrame with the right columns and dtypes. The cursor
        is closed when the iterator is exhausted, closed or garbage collected.

    Raises
    ------
    TypeError
        If ``queryset`` is not a QuerySet, or ``fields``/``chunk_size`` have the wrong type.
    ValueError
        If a field name is unknown (the message names the model and its valid
        fields), a name is repeated, ``chunk_size < 1``, or ``geometry`` or ``engine`` is
        not allowed.
    EngineUnavailable
        A ``ValueError``: at the first ``next()``, ``engine="adbc"`` cannot be used here (the
        message says why); or, later, the ADBC driver failed part-way (SQLite's type change;
        ``rows`` says how many rows were yielded before).

    Examples
    --------
    >>> from analysis_lib import iter_frames
    >>> from project.buildings.models import Building
    >>> qs = Building.objects.filter(height_m__gt=10).order_by("id")
    >>> total = 0.0
    >>> for chunk in iter_frames(qs, ["id", "footprint_m2", "zip__code"], chunk_size=10_000):
    ...     total += chunk["footprint_m2"].sum()
    """
    check_arguments(queryset, fields, chunk_size, geometry, engine)
    plan = make_plan(queryset, fields, geometry)
    return _iter_chunks(plan, chunk_size, progress, engine)


def read_frame(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    geometry: GeometryFormat = "shapely",
    index: str | None = None,
    progress: bool = False,
    engine: Engine = "auto",
    parallel: int | None = None,
) -> pd.DataFrame:
    """Load a whole QuerySet into one DataFrame, built from :func:`iter_frames` chunks.

    Same columns and dtypes as :func:`iter_frames`; the chunks are
    concatenated at the end, so the peak is about the finished frame plus
    its chunks, never a list of model instances.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet (see :func:`iter_frames`).
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``; ``None`` for every concrete field.
    chunk_size : int, default 50_000
        Rows fetched per batch.
    geometry : {"shapely", "wkb"}, default "shapely"
        Geometry columns as shapely geometries, or as WKB ``bytes``.
    index : str, optional
        A selected column to use as the index (for example ``"id"``).
    progress : bool, default False
        Show a tqdm progress bar (runs one extra ``COUNT`` query).
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        How rows are fetched (see :func:`iter_frames`). With ``"auto"`` an
        ADBC read that fails (e.g. a SQLite column whose type changes between
        batches) is rerun on the DB-API path.
    parallel : int, optional
        ADBC engine only: read this many primary-key ranges at once, each on
        its own connection in its own thread (the driver and Arrow release
        the GIL). Applies when concatenating the ranges gives the queryset's
        own result: no slice, DISTINCT, grouping or union, and no ordering
        other than the (integer) primary key. ``None`` (default): one range
        per core, up to 2, when the keys span at least 100,000 values; ``1``:
        one read. Each range is its own snapshot: a table written to during
        the read may give a result no single moment had; pass ``1`` then.

    Returns
    -------
    pandas.DataFrame
        All rows, in the queryset's order; zero rows give an empty frame
        with the right columns and dtypes.

    Raises
    ------
    TypeError
        If ``queryset`` is not a QuerySet, or an argument has the wrong type.
    ValueError
        If a field name is unknown, ``chunk_size < 1``, ``geometry`` is not
        allowed, or ``index`` is not one of the selected columns.
    EngineUnavailable
        A ``ValueError``: ``engine="adbc"`` cannot be used here (the message says why).

    Examples
    --------
    >>> from analysis_lib import read_frame
    >>> from project.buildings.models import Building
    >>> df = read_frame(
    ...     Building.objects.filter(zip__code="01002"),
    ...     ["id", "height_m", "use_type", "zip__code"],
    ...     index="id",
    ... )
    >>> list(df.columns)
    ['height_m', 'use_type', 'zip__code']
    """
    check_arguments(queryset, fields, chunk_size, geometry, engine)
    check_positive_int("parallel", parallel, allow_none=True)
    plan = make_plan(queryset, fields, geometry)
    names = [c.name for c in plan.columns]
    if index is not None and index not in names:
        raise ValueError(f"index {index!r} is not one of the selected columns {names}")
    frame = _read_all(queryset, fields, plan, chunk_size, progress, engine, parallel)
    if index is not None:
        frame = frame.set_index(index)
    return frame


def read_geodataframe(
    queryset: QuerySet,
    fields: Sequence[str] | None = None,
    *,
    geometry_field: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    engine: Engine = "auto",
    parallel: int | None = None,
) -> geopandas.GeoDataFrame:
    """Load a QuerySet into a geopandas GeoDataFrame with the geometry field's CRS.

    Needs the optional dependency geopandas (``pip install 'analysis-lib[geo]'``).
    Rows are read in chunks exactly as by :func:`read_frame`; every geometry
    column becomes a GeoSeries with the CRS of its field's SRID.

    Parameters
    ----------
    queryset : QuerySet
        Any QuerySet (see :func:`iter_frames`).
    fields : sequence of str, optional
        Names as accepted by ``QuerySet.values()``; they must include a
        geometry field. ``None`` selects every concrete field.
    geometry_field : str, optional
        The active geometry column; by default the first geometry column selected.
    chunk_size : int, default 50_000
        Rows fetched per batch.
    progress : bool, default False
        Show a tqdm progress bar (runs one extra ``COUNT`` query).
    engine : {"auto", "dbapi", "adbc"}, default "auto"
        How rows are fetched (see :func:`iter_frames`). With ``"auto"`` an
        ADBC read that fails (e.g. a SQLite column whose type changes between
        batches) is rerun on the DB-API path.
    parallel : int, optional
        ADBC engine only: read this many primary-key ranges at once, each on
        its own connection in its own thread (the driver and Arrow release
        the GIL). Applies when concatenating the ranges gives the queryset's
        own result: no slice, DISTINCT, grouping or union, and no ordering
        other than the (integer) primary key. ``None`` (default): one range
        per core, up to 2, when the keys span at least 100,000 values; ``1``:
        one read. Each range is its own snapshot: a table written to during
        the read may give a result no single moment had; pass ``1`` then.

    Returns
    -------
    geopandas.GeoDataFrame
        The rows, with ``geometry_field`` as the active geometry.

    Raises
    ------
    ImportError
        If geopandas is not installed.
    TypeError
        If ``queryset`` is not a QuerySet, or an argument has the wrong type.
    ValueError
        If a field name is unknown, ``chunk_size < 1``, no geometry column is
        selected, or ``geometry_field`` is not a selected geometry column.
    EngineUnavailable
        A ``ValueError``: ``engine="adbc"`` cannot be used here (the message says why).

    Examples
    --------
    >>> from analysis_lib import read_geodataframe
    >>> from project.buildings.models import Building
    >>> gdf = read_geodataframe(Building.objects.all(), ["id", "use_type", "boundary"])
    >>> str(gdf.crs)
    'EPSG:4326'
    """
    check_arguments(queryset, fields, chunk_size, "shapely", engine)
    check_positive_int("parallel", parallel, allow_none=True)
    try:
        import geopandas
    except ImportError as exc:
        raise ImportError(
            "read_geodataframe() needs the optional dependency geopandas: "
            "pip install 'analysis-lib[geo]' (or: conda install -c conda-forge geopandas)"
        ) from exc
    plan = make_plan(queryset, fields, "shapely")
    geometry_columns = [c for c in plan.columns if c.kind == "geometry"]
    if not geometry_columns:
        raise ValueError(
            f"no geometry column among {[c.name for c in plan.columns]} "
            f"for model {plan.model._meta.label}; add one to fields"
        )
    if geometry_field is None:
        geometry_field = geometry_columns[0].name
    elif geometry_field not in {c.name for c in geometry_columns}:
        raise ValueError(
            f"geometry_field {geometry_field!r} is not a selected geometry column; "
            f"choose one of {[c.name for c in geometry_columns]}"
        )
    frame = _read_all(queryset, fields, plan, chunk_size, progress, engine, parallel)
    crs = {c.name: (f"EPSG:{c.srid}" if c.srid else None) for c in geometry_columns}
    for name, column_crs in crs.items():
        frame[name] = geopandas.GeoSeries(frame[name], crs=column_crs, index=frame.index)
    return geopandas.GeoDataFrame(frame, geometry=geometry_field, crs=crs[geometry_field])
