"""Per-ZIP analysis: the buildings inside each ZIP code, one ZIP at a time or all in one pass.

Which buildings belong to a ZIP
-------------------------------
``predicate="within"`` (the default) is GeoDjango's ``boundary__within``: a building belongs to a
ZIP when its footprint lies within the ZIP's boundary (DE-9IM *within*: no part outside, edges
lying on the border allowed). A building that straddles the border of two ZIPs belongs to
**neither**, and one outside every ZIP to none, so the counts add up to less than the number of
buildings. ``predicate="centroid"`` assigns each building to the ZIP whose area (interior or
border) holds the centroid of its footprint, so every building whose centroid falls inside the
set of ZIPs is counted exactly once; a centroid lying exactly on a border shared by two ZIPs goes
to the lower ZIP code.

GEOS and SpatiaLite
-------------------
The strategies evaluate ``within`` with different GEOS builds: ``sweep`` with the GEOS bundled
in shapely (3.14 here, a prepared ``contains``), ``orm`` and ``database`` with SpatiaLite's
``Within`` on the system GEOS (3.11 on Debian 12) or PostGIS's ``ST_Within``. On the generated
Massachusetts (2,000,000 buildings, seed 42) they agree pair by pair: 1,989,927 (ZIP, building)
pairs each (``python benchmarks/bench_per_zip.py --engines``). The disagreement measured before
this project ("SpatiaLite's Within finds 8 fewer") is reproduced by the R*Tree prefilter, not by
the predicate: SpatiaLite's R*Tree stores boxes as float32 rounded outwards, so a building lying
less than a float32 step (about 1e-5 degree, a metre at 71 W) inside its ZIP's bounding box has
a stored box poking out of the ZIP's box, and ``xmin >= zip_xmin AND ...`` silently drops it.
On the generated data that prefilter loses 2 buildings (ZIP 01776, building 1131406: 9.1e-6
degree inside the ZIP's west extreme, its stored box 2.6e-6 degree outside; ZIP 02120, building
1020800), which the stock full-scan ``__within`` finds. ``within_indexed`` and the ``database``
strategy widen the query box by a relative 2**-22 and lose nothing; ``tests/test_lookups.py``
places such a building on purpose, and the tests compare every strategy with the stock lookup.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import pandas as pd
    from django.db.models import QuerySet
    from matplotlib.axes import Axes

    from ._memory import MemoryLog

Strategy = Literal["sweep", "orm", "database"]
Predicate = Literal["within", "centroid"]
STRATEGIES: tuple[str, ...] = ("sweep", "orm", "database")
PREDICATES: tuple[str, ...] = ("within", "centroid")

#: Building columns :func:`iter_buildings_by_zip` returns unless told otherwise.
DEFAULT_FIELDS: tuple[str, ...] = ("id", "footprint_m2", "height_m", "year_built", "use_type")
# The columns the summary needs (the geometry comes on top for the sweep).
_VALUE_FIELDS = ["footprint_m2", "height_m", "year_built", "use_type"]


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    """Raise ValueError naming the argument unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"`{name}` was {value!r} but is expected to be one of {tuple(allowed)}")


def _check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    """Raise ValueError unless ``value`` is a strictly positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        allowed = "a strictly positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"`{name}` must be {allowed}, got {value!r}")


def _resolve_zips(zips: QuerySet | str) -> QuerySet:
    """Return a ZipCode QuerySet ordered by code, from a QuerySet or a two-letter state code."""
    from django.db.models import QuerySet

    from project.buildings.models import ZipCode

    if isinstance(zips, str):
        state = zips.strip().upper()
        if len(state) != 2 or not state.isalpha():
            raise ValueError(f"`zips` was {zips!r}: expected a two-letter state code such as 'MA'")
        qs = ZipCode.objects.filter(state=state)
        if not qs.exists():
            present = sorted(ZipCode.objects.order_by().values_list("state", flat=True).distinct())
            where = f"states present: {', '.join(present)}" if present else "the table is empty"
            raise ValueError(f"no ZIP codes for state {state!r} in the database ({where})")
        return qs.order_by("code")
    if not isinstance(zips, QuerySet) or not issubclass(zips.model, ZipCode):
        raise TypeError(
            f"`zips` must be a ZipCode QuerySet or a state code, got {type(zips).__name__}"
        )
    if zips.query.is_sliced:
        # A sliced QuerySet cannot be filtered further; the ZIPs are few, so pin their keys.
        zips = ZipCode.objects.filter(pk__in=list(zips.values_list("pk", flat=True)))
    return zips.order_by("code")


def _resolve_buildings(buildings: QuerySet | None) -> QuerySet:
    """Return the Building QuerySet to analyse (all buildings by default), checked."""
    from django.db.models import QuerySet

    from project.buildings.models import Building

    if buildings is None:
        return Building.objects.all()
    if not isinstance(buildings, QuerySet) or not issubclass(buildings.model, Building):
        raise TypeError(
            f"`buildings` must be a Building QuerySet or None, got {type(buildings).__name__}"
        )
    if buildings.query.is_sliced:
        raise ValueError("`buildings` must not be sliced: filter it instead")
    return buildings


def _same_srid() -> int:
    """SRID shared by the ZipCode and Building boundaries (the sweep compares them directly)."""
    from project.buildings.models import Building, ZipCode

    zip_srid = ZipCode._meta.get_field("boundary").srid
    building_srid = Building._meta.get_field("boundary").srid
    if zip_srid != building_srid:  # pragma: no cover - both models use 4326
        raise ValueError(
            f"ZipCode.boundary (SRID {zip_srid}) and Building.boundary (SRID {building_srid}) "
            "must share an SRID"
        )
    return zip_srid


def _step(label: str, log: MemoryLog | None):
    """Return a memory_step context when a log is given, else a no-op context."""
    if log is None:
        return nullcontext()
    from ._memory import memory_step

    return memory_step(label, log=log)


def _use_types() -> tuple[str, ...]:
    """Return the use types of the Building model, in declaration order."""
    from project.buildings.models import Building

    return tuple(Building.UseType.values)


# --------------------------------------------------------------------------------------------
# ZIPs
# --------------------------------------------------------------------------------------------


def _load_zips(zips: QuerySet) -> pd.DataFrame:
    """ZIPs as a frame indexed by code (sorted): pk, shapely geometry, area in km²."""
    from ._geo import equal_area_km2
    from .loaders import read_frame

    # DB-API: a few hundred rows, and no ADBC driver (a few MiB of shared libraries) loaded.
    frame = read_frame(
        zips.order_by("code"), ["pk", "code", "boundary"], geometry="shapely", engine="dbapi"
    )
    frame = frame.set_index("code").sort_index()
    frame.index.name = "zip_code"
    frame["area_km2"] = equal_area_km2(frame["boundary"].to_numpy(), srid=_same_srid())
    return frame


def _zip_querysets(
    zips: QuerySet, buildings: QuerySet, predicate: str
) -> Iterator[tuple[str, QuerySet]]:
    """Yield ``(code, buildings of that ZIP)`` with the index-aware lookups, in code order."""
    from django.contrib.gis.db.models.functions import Centroid
    from django.db.models import Exists, OuterRef, Q

    # Codes and boundaries of the ZIPs only (never buildings): a few MB even for a large state.
    for code, boundary in zips.values_list("code", "boundary"):
        if predicate == "within":
            yield code, buildings.filter(boundary__within_indexed=boundary)
            continue
        # Centroid: interior, or on the border when no lower code also holds it.
        earlier = zips.filter(code__lt=code, boundary__intersects=OuterRef("_centroid"))
        yield (
            code,
            buildings.filter(boundary__bboverlaps_indexed=boundary)
            .annotate(_centroid=Centroid("boundary"))
            .filter(
                Q(_centroid__within=boundary)
                | (Q(_centroid__touches=boundary) & ~Exists(earlier.values("pk")))
            ),
        )


# --------------------------------------------------------------------------------------------
# Mergeable partial aggregates
# --------------------------------------------------------------------------------------------


class _Partials:
    """Per-ZIP sums, counts and maxima, plus what exact medians need; merged across chunks.

    Footprints are kept for the exact medians (8 bytes per assigned building: an exact median
    of continuous values needs them all) as one float64 array per merged chunk, sorted by ZIP,
    with that chunk's ZIP counts: a few arrays per chunk, never one per ZIP and chunk (on
    2,000,000 buildings in 100 chunks, 49,400 small arrays cost about 6 MiB on top of the
    15 MiB of values). Years are kept as integer counts per ZIP and year.
    """

    def __init__(self, n_zips: int, use_types: Sequence[str]) -> None:
        import numpy as np

        self.use_types = tuple(use_types)
        self.count = np.zeros(n_zips, np.int64)
        self.footprint_sum = np.zeros(n_zips)
        self.height_sum = np.zeros(n_zips)
        self.height_count = np.zeros(n_zips, np.int64)
        self.height_max = np.full(n_zips, -np.inf)
        self.use_counts = np.zeros((n_zips, len(self.use_types)), np.int64)
        # Per merged chunk: its footprints sorted by ZIP position, and how many each ZIP has.
        self.footprint_chunks: list[np.ndarray] = []
        self.footprint_counts: list[np.ndarray] = []
        self.year_lo = 0
        self.year_counts = np.zeros((n_zips, 0), np.int64)

    @classmethod
    def from_rows(
        cls,
        n_zips: int,
        use_types: Sequence[str],
        zip_idx: np.ndarray,
        frame: pd.DataFrame,
        rows: np.ndarray | None = None,
    ) -> _Partials:
        """Aggregate rows of ``frame`` (positions ``rows``, default all) in ZIPs ``zip_idx``."""
        import numpy as np
        import pandas as pd

        part = cls(n_zips, use_types)
        zip_idx = np.asarray(zip_idx, dtype=np.int64)
        if len(zip_idx) == 0:
            return part
        take = slice(None) if rows is None else rows  # columns only: never copy the whole frame
        footprint = frame["footprint_m2"].to_numpy(dtype=float, na_value=np.nan)[take]
        height = frame["height_m"].to_numpy(dtype=float, na_value=np.nan)[take]
        year = frame["year_built"].to_numpy(dtype=float, na_value=np.nan)[take]
        use = pd.Categorical(frame["use_type"], categories=part.use_types).codes[take]

        part.count = np.bincount(zip_idx, minlength=n_zips)
        part.footprint_sum = np.bincount(zip_idx, weights=footprint, minlength=n_zips)
        has_height = ~np.isnan(height)
        part.height_sum = np.bincount(
            zip_idx[has_height], weights=height[has_height], minlength=n_zips
        )
        part.height_count = np.bincount(zip_idx[has_height], minlength=n_zips)
        np.maximum.at(part.height_max, zip_idx[has_height], height[has_height])
        known = use >= 0  # use types outside the model's choices count, but in no share
        flat = zip_idx[known] * len(part.use_types) + use[known]
        part.use_counts = np.bincount(flat, minlength=n_zips * len(part.use_types)).reshape(
            n_zips, len(part.use_types)
        )
        has_year = ~np.isnan(year)
        if has_year.any():
            years = year[has_year].astype(np.int64)
            part.year_lo = int(years.min())
            span = int(years.max()) - part.year_lo + 1
            flat = zip_idx[has_year] * span + (years - part.year_lo)
            part.year_counts = np.bincount(flat, minlength=n_zips * span).reshape(n_zips, span)
        part.footprint_chunks.append(footprint[np.argsort(zip_idx, kind="stable")])
        part.footprint_counts.append(part.count.astype(np.int32))
        return part

    def merge(self, other: _Partials) -> None:
        """Add ``other``'s aggregates to these."""
        import numpy as np

        self.count += other.count
        self.footprint_sum += other.footprint_sum
        self.height_sum += other.height_sum
        self.height_count += other.height_count
        np.maximum(self.height_max, other.height_max, out=self.height_max)
        self.use_counts += other.use_counts
        self.footprint_chunks.extend(other.footprint_chunks)
        self.footprint_counts.extend(other.footprint_counts)
        if other.year_counts.shape[1]:
            if not self.year_counts.shape[1]:
                self.year_lo, self.year_counts = other.year_lo, other.year_counts.copy()
                return
            lo = min(self.year_lo, other.year_lo)
            hi = max(
                self.year_lo + self.year_counts.shape[1], other.year_lo + other.year_counts.shape[1]
            )
            if (lo, hi) != (self.year_lo, self.year_lo + self.year_counts.shape[1]):
                grown = np.zeros((len(self.count), hi - lo), np.int64)
                start = self.year_lo - lo
                grown[:, start : start + self.year_counts.shape[1]] = self.year_counts
                self.year_lo, self.year_counts = lo, grown
            start = other.year_lo - self.year_lo
            self.year_counts[:, start : start + other.year_counts.shape[1]] += other.year_counts

    def raw(self, codes: pd.Index) -> pd.DataFrame:
        """Return the raw per-ZIP aggregates, indexed by ``codes`` (see :func:`_finish`)."""
        import numpy as np
        import pandas as pd

        footprint_median = self._footprint_medians()
        raw = pd.DataFrame(
            {
                "n_buildings": self.count,
                "footprint_sum": self.footprint_sum,
                "footprint_median": footprint_median,
                "height_sum": self.height_sum,
                "height_count": self.height_count,
                "height_max": np.where(np.isinf(self.height_max), np.nan, self.height_max),
                "year_median": _median_from_counts(self.year_counts, self.year_lo),
            },
            index=codes,
        )
        for pos, use in enumerate(self.use_types):
            raw[f"n_{use}"] = self.use_counts[:, pos]
        return raw

    def _footprint_medians(self) -> np.ndarray:
        """Exact median footprint per ZIP (NaN for none), gathering one ZIP at a time."""
        import numpy as np

        n_zips = len(self.count)
        result = np.full(n_zips, np.nan)
        if not self.footprint_chunks:
            return result
        counts = np.stack(self.footprint_counts)  # (chunks, ZIPs): a few hundred KB
        ends = np.cumsum(counts, axis=1)
        for zip_pos in np.flatnonzero(counts.sum(axis=0)):
            chunks = np.flatnonzero(counts[:, zip_pos])
            values = np.concatenate(
                [
                    self.footprint_chunks[c][
                        ends[c, zip_pos] - counts[c, zip_pos] : ends[c, zip_pos]
                    ]
                    for c in chunks
                ]
            )
            result[zip_pos] = np.median(values)
        return result


def _median_from_counts(counts: np.ndarray, lo: int) -> np.ndarray:
    """Exact median per row of integer-value counts (value ``lo + column``); NaN for no values."""
    import numpy as np

    n_rows = counts.shape[0]
    total = counts.sum(axis=1) if counts.shape[1] else np.zeros(n_rows, np.int64)
    result = np.full(n_rows, np.nan)
    rows = np.flatnonzero(total)
    if len(rows) == 0:
        return result
    cumulative = np.cumsum(counts[rows], axis=1)
    # 1-based ranks of the two middle values (the same rank twice when the count is odd).
    low_rank = (total[rows] + 1) // 2
    high_rank = total[rows] // 2 + 1
    low = np.argmax(cumulative >= low_rank[:, None], axis=1)
    high = np.argmax(cumulative >= high_rank[:, None], axis=1)
    result[rows] = lo + (low + high) / 2.0
    return result


def _finish(raw: pd.DataFrame, zip_frame: pd.DataFrame, use_types: Sequence[str]) -> pd.DataFrame:
    """Turn raw aggregates into the summary: means, shares, density; every ZIP, empty ones too."""
    import numpy as np
    import pandas as pd

    raw = raw.reindex(zip_frame.index)
    count = raw["n_buildings"].fillna(0).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        nonzero = count.where(count > 0).astype(float)
        height_count = raw["height_count"].fillna(0)
        summary = pd.DataFrame(
            {
                "n_buildings": count,
                "footprint_total_m2": raw["footprint_sum"].fillna(0.0).astype(float),
                "footprint_mean_m2": raw["footprint_sum"].astype(float) / nonzero,
                "footprint_median_m2": raw["footprint_median"].astype(float),
                "height_mean_m": (
                    raw["height_sum"].astype(float) / height_count.where(height_count > 0)
                ).astype(float),
                "height_max_m": raw["height_max"].astype(float),
                "year_built_median": raw["year_median"].astype(float),
            },
            index=zip_frame.index,
        )
        for use in use_types:
            summary[f"share_{use}"] = raw[f"n_{use}"].fillna(0).astype(float) / nonzero
        summary["area_km2"] = zip_frame["area_km2"].astype(float)
        summary["buildings_per_km2"] = count / summary["area_km2"]
    summary.index.name = "zip_code"
    return summary


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------


def _assign(geoms: np.ndarray, zips: np.ndarray, predicate: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(zip position, building position)`` for one chunk, with prepared ZIP geometries.

    The tree is built over the chunk and queried with the (prepared) ZIP polygons: ``contains``
    with the ZIP prepared is GEOS's fast path, and ``zip contains building`` is by definition
    ``building within zip``.
    """
    import numpy as np
    import shapely

    if predicate == "within":
        tree = shapely.STRtree(geoms)
        zip_idx, building_idx = tree.query(zips, predicate="contains")
        return zip_idx, building_idx
    tree = shapely.STRtree(shapely.centroid(geoms))
    zip_idx, building_idx = tree.query(zips, predicate="intersects")
    # A centroid on a shared border intersects two ZIPs: keep the first in code order.
    order = np.lexsort((zip_idx, building_idx))
    zip_idx, building_idx = zip_idx[order], building_idx[order]
    first = np.r_[True, building_idx[1:] != building_idx[:-1]]
    return zip_idx[first], building_idx[first]


def _match_chunk(
    wkb: np.ndarray, zips: np.ndarray, grid: Any, predicate: str
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (ZIP position, row position) for one chunk of WKB footprints: raster, then GEOS."""
    import numpy as np
    import shapely

    from ._geo import ZipGrid, wkb_polygon_bounds

    # Most footprints lie well inside one ZIP (or outside all): the grid says which from
    # their boxes alone; GEOS decides the rest, the footprints near a border.
    cell = grid.classify(wkb_polygon_bounds(wkb))
    fast = np.flatnonzero(cell >= 0)
    slow = np.flatnonzero(cell == ZipGrid.SLOW)
    zip_idx, building_idx = cell[fast], fast
    if len(slow):
        slow_zip, slow_building = _assign(shapely.from_wkb(wkb[slow]), zips, predicate)
        zip_idx = np.concatenate([zip_idx, slow_zip])
        building_idx = np.concatenate([building_idx, slow[slow_building]])
    return zip_idx, building_idx


def _sweep(
    zip_frame: pd.DataFrame,
    buildings: QuerySet,
    predicate: str,
    chunk_size: int,
    workers: int | None,
    progress: bool,
    engine: str,
) -> pd.DataFrame:
    """One streaming pass over the buildings; chunks matched in ``workers`` threads.

    ``workers=None``: one thread when ADBC reads (it fetches without the GIL), else none.
    """
    import shapely
    from tqdm.auto import tqdm

    from ._geo import ZipGrid
    from .loaders import iter_frames, pyarrow_kept_out

    n_zips = len(zip_frame)
    use_types = _use_types()
    zip_wkb = shapely.to_wkb(zip_frame["boundary"].to_numpy())
    local = threading.local()

    def prepared_zips():
        # GEOS prepared geometries build their indexes lazily and are not safe to share between
        # threads: each worker thread gets its own prepared copy (a few MB at most).
        geoms = getattr(local, "zips", None)
        if geoms is None:
            geoms = shapely.from_wkb(zip_wkb)
            shapely.prepare(geoms)
            local.zips = geoms
        return geoms

    grid = ZipGrid(zip_frame["boundary"].to_numpy())

    def work(frame: pd.DataFrame) -> _Partials:
        zip_idx, building_idx = _match_chunk(
            frame["boundary"].to_numpy(), prepared_zips(), grid, predicate
        )
        return _Partials.from_rows(n_zips, use_types, zip_idx, frame, building_idx)

    def one_pass(engine: str) -> _Partials:
        total = _Partials(n_zips, use_types)
        bar = tqdm(
            total=buildings.count() if progress else None,
            unit="bldg",
            unit_scale=True,
            desc=f"sweep ({predicate})",
            disable=not progress,
        )
        frames = iter_frames(
            buildings.order_by(),
            ["boundary", *_VALUE_FIELDS],
            chunk_size,
            geometry="wkb",
            engine=engine,
        )
        threads = workers if workers is not None else (1 if engine == "adbc" else 0)
        try:
            if threads == 0:
                for frame in frames:
                    total.merge(work(frame))
                    bar.update(len(frame))
                return total
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sweep") as pool:
                # At most `threads` chunks in flight while the next one is fetched: memory stays
                # bounded by threads + 1 chunks.
                pending: deque = deque()
                for frame in frames:
                    pending.append((pool.submit(work, frame), len(frame)))
                    del frame
                    while len(pending) > threads:
                        future, n_rows = pending.popleft()
                        total.merge(future.result())
                        bar.update(n_rows)
                while pending:
                    future, n_rows = pending.popleft()
                    total.merge(future.result())
                    bar.update(n_rows)
            return total
        finally:
            bar.close()

    if engine == "auto" and pyarrow_kept_out():
        engine = "dbapi"  # ADBC needs pyarrow: do not even load its driver
    try:
        if engine != "auto":
            return one_pass(engine).raw(zip_frame.index)
        # "auto": the Arrow-native ADBC engine when it can run here, else the DB-API one. ADBC
        # on SQLite fixes column types from the first batch and can fail on a later one (a REAL
        # column whose first rows are all NULL): then the pass restarts on DB-API, from scratch.
        from .loaders import EngineUnavailable

        try:
            return one_pass("adbc").raw(zip_frame.index)
        except EngineUnavailable:  # refused before the first chunk, or a type change mid-way
            pass
        return one_pass("dbapi").raw(zip_frame.index)
    finally:
        _trim_heap()


def _trim_heap() -> None:
    """Give the heap pages the pass freed back to the OS (glibc ``malloc_trim``; else nothing).

    The pass leaves its chunks and footprints as free space inside the C heap, which glibc keeps
    mapped: RSS stays near the peak until later allocations reuse it. Trimming does not change
    the pass's peak; what runs next (``analyze_buildings --map`` imports matplotlib and draws)
    starts lower (measured once on the generated Massachusetts, without a switch to repeat it: the
    command's peak with ``--map`` went from 196 to 188 MiB).
    """
    import ctypes
    from contextlib import suppress

    with suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(None).malloc_trim(0)


def _orm(
    zips: QuerySet,
    zip_frame: pd.DataFrame,
    buildings: QuerySet,
    predicate: str,
    chunk_size: int,
    progress: bool,
) -> pd.DataFrame:
    """Run the classic per-ZIP loop: one index-aware query per ZIP, values only."""
    import numpy as np
    from tqdm.auto import tqdm

    from .loaders import read_frame

    use_types = _use_types()
    total = _Partials(len(zip_frame), use_types)
    position = {code: pos for pos, code in enumerate(zip_frame.index)}
    for code, queryset in tqdm(
        _zip_querysets(zips, buildings, predicate),
        total=len(zip_frame),
        unit="ZIP",
        desc=f"orm ({predicate})",
        disable=not progress,
    ):
        # DB-API: the ZIP boundary parameter cannot be bound by ADBC (and trying costs time).
        frame = read_frame(
            queryset.order_by(), _VALUE_FIELDS, chunk_size=chunk_size, engine="dbapi"
        )
        zip_idx = np.full(len(frame), position[code], dtype=np.int64)
        total.merge(_Partials.from_rows(len(zip_frame), use_types, zip_idx, frame))
    return total.raw(zip_frame.index)


def _subquery(queryset: QuerySet) -> tuple[str, tuple]:
    """Return SQL and parameters of ``queryset``'s primary keys, for ``pk IN (...)``."""
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    return sql, tuple(params)


def _database(zips: QuerySet, buildings: QuerySet, predicate: str) -> pd.DataFrame:
    """Raw aggregates computed by the database in one statement."""
    import pandas as pd
    from django.db import connections

    from project.buildings.lookups import FLOAT32_MARGIN, spatialite_index_table
    from project.buildings.models import Building, ZipCode

    connection = connections[buildings.db]
    ops = connection.ops
    qn = ops.quote_name
    use_types = _use_types()
    b_table, z_table = qn(Building._meta.db_table), qn(ZipCode._meta.db_table)
    b_field = Building._meta.get_field("boundary")
    col = {
        name: qn(Building._meta.get_field(name).column)
        for name in ("boundary", "footprint_m2", "height_m", "year_built", "use_type")
    }
    b_pk = qn(Building._meta.pk.column)
    z_pk = qn(ZipCode._meta.pk.column)
    z_code = qn(ZipCode._meta.get_field("code").column)
    z_boundary = qn(ZipCode._meta.get_field("boundary").column)
    zips_sql, zips_params = _subquery(zips)
    params: list[Any] = list(zips_params)
    building_filter = ""
    if buildings.query.has_filters():
        sub_sql, sub_params = _subquery(buildings)
        building_filter = f"AND b.{b_pk} IN ({sub_sql})"
    else:
        sub_params = ()
    values = (
        f"b.{col['footprint_m2']} AS fp, b.{col['height_m']} AS h, "
        f"b.{col['year_built']} AS y, b.{col['use_type']} AS u"
    )

    if getattr(ops, "spatialite", False):
        index = spatialite_index_table(connection, b_field)
        if index is None:
            raise RuntimeError(
                f"strategy='database' needs the SpatiaLite spatial index on "
                f"{Building._meta.db_table}.boundary, which is not enabled: run "
                f"SELECT CreateSpatialIndex('{Building._meta.db_table}', 'boundary') "
                "(or use strategy='sweep')"
            )
        margin = repr(FLOAT32_MARGIN)
        zips_cte = (
            f"z AS (SELECT zc.{z_pk} AS zid, zc.{z_code} AS code, zc.{z_boundary} AS zb, "  # noqa: S608 (identifiers only)
            f"MbrMinX(zc.{z_boundary}) AS x0, MbrMaxX(zc.{z_boundary}) AS x1, "
            f"MbrMinY(zc.{z_boundary}) AS y0, MbrMaxY(zc.{z_boundary}) AS y1 "
            f"FROM {z_table} AS zc WHERE zc.{z_pk} IN ({zips_sql}))"
        )
        # CROSS JOIN fixes the join order ZIP -> R*Tree -> building: with a plain JOIN SQLite's
        # planner scans the whole R*Tree for every building.
        if predicate == "within":
            pairs = (
                f"pairs AS (SELECT z.code AS code, {values} "  # noqa: S608 (identifiers only)
                f"FROM z CROSS JOIN {qn(index)} AS r CROSS JOIN {b_table} AS b "
                f"WHERE r.xmin >= z.x0 - ABS(z.x0) * {margin} "
                f"AND r.xmax <= z.x1 + ABS(z.x1) * {margin} "
                f"AND r.ymin >= z.y0 - ABS(z.y0) * {margin} "
                f"AND r.ymax <= z.y1 + ABS(z.y1) * {margin} "
                f"AND b.ROWID = r.pkid AND Within(b.{col['boundary']}, z.zb) > 0 "
                f"{building_filter})"
            )
        else:
            pairs = (
                f"assign AS (SELECT r.pkid AS bid, MIN(z.code) AS code "  # noqa: S608 (identifiers only)
                f"FROM z CROSS JOIN {qn(index)} AS r CROSS JOIN {b_table} AS b "
                f"WHERE r.xmin <= z.x1 AND r.xmax >= z.x0 AND r.ymin <= z.y1 AND r.ymax >= z.y0 "
                f"AND b.ROWID = r.pkid AND Intersects(Centroid(b.{col['boundary']}), z.zb) > 0 "
                f"{building_filter} GROUP BY r.pkid), "
                f"pairs AS (SELECT a.code AS code, {values} "
                f"FROM assign AS a CROSS JOIN {b_table} AS b WHERE b.ROWID = a.bid)"
            )
    elif getattr(ops, "postgis", False):
        zips_cte = (
            f"z AS (SELECT zc.{z_pk} AS zid, zc.{z_code} AS code, zc.{z_boundary} AS zb "  # noqa: S608 (identifiers only)
            f"FROM {z_table} AS zc WHERE zc.{z_pk} IN ({zips_sql}))"
        )
        if predicate == "within":
            pairs = (
                f"pairs AS (SELECT z.code AS code, {values} FROM z JOIN {b_table} AS b "  # noqa: S608 (identifiers only)
                f"ON ST_Within(b.{col['boundary']}, z.zb) {building_filter})"
            )
        else:
            pairs = (
                f"assign AS (SELECT b.{b_pk} AS bid, MIN(z.code) AS code "  # noqa: S608 (identifiers only)
                f"FROM z JOIN {b_table} AS b ON b.{col['boundary']} && z.zb "
                f"AND ST_Intersects(ST_Centroid(b.{col['boundary']}), z.zb) "
                f"{building_filter} GROUP BY b.{b_pk}), "
                f"pairs AS (SELECT a.code AS code, {values} "
                f"FROM assign AS a JOIN {b_table} AS b ON b.{b_pk} = a.bid)"
            )
    else:  # pragma: no cover - settings allow only the two
        raise NotImplementedError(f"strategy='database' does not support {connection.vendor}")
    params.extend(sub_params)

    use_sums = ", ".join(
        f"SUM(CASE WHEN u = %s THEN 1 ELSE 0 END) AS n_{pos}" for pos in range(len(use_types))
    )
    # Exact medians with window functions: the middle row numbers of each ZIP (one row when the
    # count is odd, two to average when it is even); NULL years get their own partition.
    sql = (
        f"WITH {zips_cte}, {pairs}, "  # noqa: S608 (identifiers only)
        "ranked AS (SELECT code, fp, h, y, u, "
        "COUNT(*) OVER (PARTITION BY code) AS n, "
        "ROW_NUMBER() OVER (PARTITION BY code ORDER BY fp) AS fp_rn, "
        "COUNT(y) OVER (PARTITION BY code) AS ny, "
        "ROW_NUMBER() OVER (PARTITION BY code, (y IS NULL) ORDER BY y) AS y_rn "
        "FROM pairs) "
        "SELECT code, COUNT(*) AS n_buildings, SUM(fp) AS footprint_sum, "
        "AVG(CASE WHEN fp_rn IN ((n + 1) / 2, (n + 2) / 2) THEN fp END) AS footprint_median, "
        "SUM(h) AS height_sum, COUNT(h) AS height_count, MAX(h) AS height_max, "
        "AVG(CASE WHEN y IS NOT NULL AND y_rn IN ((ny + 1) / 2, (ny + 2) / 2) "
        "THEN CAST(y AS DOUBLE PRECISION) END) AS year_median, "
        f"{use_sums} FROM ranked GROUP BY code"
    )
    params.extend(use_types)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)  # identifiers come from the models; values are parameters
        columns = [c[0] for c in cursor.description]
        rows = cursor.fetchall()
    raw = pd.DataFrame.from_records(rows, columns=columns).set_index("code")
    raw = raw.rename(columns={f"n_{pos}": f"n_{use}" for pos, use in enumerate(use_types)})
    raw["height_sum"] = raw["height_sum"].fillna(0.0)
    return raw


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def summarize_by_zip(
    zips: QuerySet | str,
    buildings: QuerySet | None = None,
    *,
    strategy: Strategy = "sweep",
    predicate: Predicate = "within",
    chunk_size: int = 10_000,
    workers: int | None = None,
    engine: Literal["auto", "dbapi", "adbc"] = "auto",
    progress: bool = False,
    log: MemoryLog | None = None,
    client: Any = None,
) -> pd.DataFrame:
    """Summarise the buildings of every ZIP code: counts, footprints, heights, years, use types.

    Which buildings belong to a ZIP (``predicate``):

    ``"within"`` (default)
        GeoDjango's ``boundary__within``: the footprint lies within the ZIP (no part outside;
        edges on the border are allowed). A building that straddles the border of two ZIPs
        belongs to **neither**, so the counts can add up to fewer than the buildings.
    ``"centroid"``
        The ZIP whose area, interior or border, holds the footprint's centroid: every building
        whose centroid falls inside the ZIPs is counted exactly once. A centroid exactly on a
        border shared by two ZIPs goes to the lower ZIP code. The centroid of an L-shaped
        footprint can lie outside it; it still decides.

    How (``strategy``; all give the same table on the same data, the tests check it):

    ``"sweep"`` (default)
        One streaming pass over the buildings through :func:`~analysis_lib.iter_frames`
        (geometry as WKB), partial aggregates merged at the end. Each chunk is matched to the
        ZIPs in two steps: a raster of the ZIPs (about two million cells, those touching a
        border marked) places every footprint whose bounding box lies in cells of a single
        ZIP, or of none, from the box alone, read from the WKB with numpy (no GEOS objects);
        the rest, the footprints near a border (about 7% of the generated Massachusetts), are
        decoded with ``shapely.from_wkb`` and matched with an ``STRtree`` over the chunk queried
        with the prepared ZIP polygons (``contains``). Both steps are exact: the raster only
        answers when the box is inside one ZIP's interior. With ``workers=1`` or more (by default
        one when ADBC reads), chunks are matched in background threads while the calling thread
        fetches the next one. Memory:
        ``workers + 1`` chunks, the raster (4 MB), fixed per-ZIP aggregates, and 8 bytes per
        assigned building for the exact footprint medians.
    ``"orm"``
        The classic per-ZIP loop, fixed: one query per ZIP with the index-aware lookup
        ``boundary__within_indexed`` (``bboverlaps_indexed`` plus a centroid test for
        ``"centroid"``), values only (no model instances). The reference.
    ``"database"``
        One SQL statement: ZIPs joined to buildings through the spatial index (an R*Tree
        ``CROSS JOIN`` on SpatiaLite, whose planner picks a disastrous plan for a plain ``JOIN``;
        ``ST_Within`` with the GiST index on PostGIS), aggregates and exact medians (window
        functions) computed by the database.

    Medians are exact (the mean of the two middle values for an even count), in every strategy.

    ``sweep`` decides ``within`` with shapely's GEOS, ``orm`` and ``database`` with SpatiaLite's
    or PostGIS's: on the generated Massachusetts they agree pair by pair. The case that does go
    wrong is an R*Tree prefilter that ignores float32 rounding (a building within a metre of its
    ZIP's bounding box is lost); the lookups here correct it (see :mod:`analysis_lib._per_zip`).

    Parameters
    ----------
    zips : QuerySet or str
        ZipCode QuerySet, or a two-letter state code (``"MA"``) for all ZIPs of that state.
    buildings : QuerySet, optional
        Building QuerySet to analyse (default: all buildings). It may be filtered, not sliced.
    strategy : {"sweep", "orm", "database"}
        How to compute it (see above).
    predicate : {"within", "centroid"}
        Which buildings belong to a ZIP (see above).
    chunk_size : int
        Rows per fetch (``sweep``, ``orm``; default 10,000). The sweep holds ``workers + 1``
        chunks, each a few MB plus the rows fetched to build it. On the generated
        Massachusetts (2,000,000 buildings), with pyarrow kept out, the peak RSS at 20,000 /
        10,000 / 5,000 rows was 186 / 180 / 178 MiB (``manage.py analyze_buildings --state MA
        --chunk-size N`` prints it), for a few percent more time per halving.
    workers : int, optional
        Background threads matching chunks in ``sweep`` while the calling thread fetches the
        next one; 0 does everything in the calling thread. ``None`` (default): 1 when the pass
        reads with the ADBC engine, which fetches without holding the GIL, else 0: the DB-API
        fetch builds Python rows under the GIL and a thread does not pay. Measured on the
        generated Massachusetts with ``manage.py analyze_buildings --workers {0,1}
        [--with-pyarrow]``: ADBC 4.6 s without a thread, 3.3 s with one; DB-API 5.3 / 5.4 s.
    engine : {"auto", "dbapi", "adbc"}
        How ``sweep`` reads the rows (see :func:`~analysis_lib.iter_frames`). ``"auto"``
        (default) uses the Arrow-native ADBC engine when it can run here (a database file or
        server, outside ``transaction.atomic()``, the driver installed), about a third less
        CPU than DB-API on 2,000,000 buildings, and falls back to DB-API otherwise; if ADBC
        fails part-way (SQLite: a column whose type changes after the first batch), the pass
        restarts on DB-API. In a process that keeps pyarrow out
        (:func:`~analysis_lib.keep_pyarrow_out`; ADBC needs it) ``"auto"`` reads with DB-API
        without loading the ADBC driver. ``orm`` always reads with DB-API: its ZIP geometry
        parameter cannot be bound by ADBC.
    progress : bool
        Show a tqdm progress bar.
    log : MemoryLog, optional
        When given, the ZIP loading and the analysis are measured with
        :func:`~analysis_lib.memory_step` into it.
    client : distributed.Client, optional
        Run the ``sweep`` on this Dask cluster instead, through
        :func:`~analysis_lib.summarize_by_zip_distributed` (primary-key ranges read by the
        workers; the same table, sums equal up to summation order). Needs the ``dask`` extra.

    Returns
    -------
    pandas.DataFrame
        Indexed by ZIP code (``zip_code``, sorted), one row per ZIP, empty ZIPs included with
        ``n_buildings == 0``. Columns: ``n_buildings``, ``footprint_total_m2``,
        ``footprint_mean_m2``, ``footprint_median_m2``, ``height_mean_m``, ``height_max_m``
        (over the buildings with a height), ``year_built_median`` (over those with a year),
        ``share_<use type>`` for each ``Building.UseType`` (NaN for an empty ZIP), ``area_km2``
        (in an equal-area projection, EPSG:6933) and ``buildings_per_km2``.

    Raises
    ------
    ValueError
        If ``strategy``, ``predicate``, ``chunk_size``, ``workers`` or ``engine`` is invalid,
        if a state code has no ZIPs in the database, if ``buildings`` is sliced, or if a
        ``client`` is given with a strategy other than ``"sweep"``.
    TypeError
        If ``zips`` or ``buildings`` is not a QuerySet of the right model.
    RuntimeError
        For ``strategy="database"`` on SpatiaLite when the spatial index is disabled.

    Examples
    --------
    >>> from analysis_lib import summarize_by_zip
    >>> summary = summarize_by_zip("MA", progress=True)  # doctest: +SKIP
    >>> summary.nlargest(3, "buildings_per_km2")[["n_buildings", "buildings_per_km2"]]
    ... # doctest: +SKIP
    """
    _check_choice("strategy", strategy, STRATEGIES)
    _check_choice("predicate", predicate, PREDICATES)
    _check_positive("chunk_size", chunk_size)
    _check_choice("engine", engine, ("auto", "dbapi", "adbc"))
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
    ):
        raise ValueError(f"`workers` must be a non-negative integer or None, got {workers!r}")
    if client is not None:
        if strategy != "sweep":
            raise ValueError(
                f"`client` runs the sweep strategy on a Dask cluster, but `strategy` was "
                f"{strategy!r}; use strategy='sweep' or drop client"
            )
        from ._dask import summarize_by_zip_distributed

        return summarize_by_zip_distributed(
            zips,
            buildings,
            client=client,
            predicate=predicate,
            chunk_size=chunk_size,
            progress=progress,
        )
    zips_qs = _resolve_zips(zips)
    buildings_qs = _resolve_buildings(buildings)
    with _step("per-ZIP: load ZIPs", log):
        zip_frame = _load_zips(zips_qs)
    with _step(f"per-ZIP: {strategy} ({predicate})", log):
        if strategy == "sweep":
            raw = _sweep(zip_frame, buildings_qs, predicate, chunk_size, workers, progress, engine)
        elif strategy == "orm":
            raw = _orm(zips_qs, zip_frame, buildings_qs, predicate, chunk_size, progress)
        else:
            raw = _database(zips_qs, buildings_qs, predicate)
    return _finish(raw, zip_frame, _use_types())


def iter_buildings_by_zip(
    zips: QuerySet | str,
    buildings: QuerySet | None = None,
    fields: Sequence[str] = DEFAULT_FIELDS,
    *,
    predicate: Predicate = "within",
    geometry: Literal["shapely", "wkb"] = "shapely",
    chunk_size: int = 20_000,
    progress: bool = False,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield ``(zip_code, DataFrame)`` for each ZIP, holding only the requested building columns.

    The drop-in replacement for the classic loop of ``DESIGN.md``::

        for zip_code, frame in iter_buildings_by_zip("MA", fields=["id", "footprint_m2"]):
            ...  # frame: this ZIP's buildings, one row each

    Each ZIP is one query with the index-aware lookup (``boundary__within_indexed``, so the
    spatial index is used on SpatiaLite too) read with :func:`~analysis_lib.read_frame`, values
    only: memory stays bounded by one ZIP's frame plus one fetch chunk, whatever the size of
    the state. Rows come in primary-key order; ZIPs in code order, empty ones included (with an
    empty frame of the right columns). The same ``predicate`` rules as :func:`summarize_by_zip`
    apply: with ``"within"`` a building straddling two ZIPs is in neither frame.

    Parameters
    ----------
    zips : QuerySet or str
        ZipCode QuerySet, or a two-letter state code.
    buildings : QuerySet, optional
        Building QuerySet (default: all buildings); filtered, not sliced.
    fields : sequence of str
        Building columns, as for ``QuerySet.values()`` (related lookups such as ``"zip__code"``
        allowed). The footprint comes only when asked for, as ``"boundary"``.
    predicate : {"within", "centroid"}
        Which buildings belong to a ZIP (see :func:`summarize_by_zip`).
    geometry : {"shapely", "wkb"}
        How a requested geometry column arrives (see :func:`~analysis_lib.read_frame`).
    chunk_size : int
        Rows per fetch within a ZIP.
    progress : bool
        Show a tqdm progress bar over the ZIPs.

    Yields
    ------
    tuple of (str, pandas.DataFrame)
        The ZIP code and its buildings.

    Raises
    ------
    ValueError
        If an argument is invalid (checked before any query), or a state has no ZIPs.
    TypeError
        If ``zips`` or ``buildings`` is not a QuerySet of the right model.

    Examples
    --------
    >>> from analysis_lib import iter_buildings_by_zip
    >>> for code, frame in iter_buildings_by_zip("MA", fields=["footprint_m2"]):  # doctest: +SKIP
    ...     print(code, len(frame), frame["footprint_m2"].median())
    """
    # Check everything before the first query, and before the caller's first next().
    _check_choice("predicate", predicate, PREDICATES)
    _check_choice("geometry", geometry, ("shapely", "wkb"))
    _check_positive("chunk_size", chunk_size)
    if isinstance(fields, str) or not all(isinstance(f, str) for f in fields) or not fields:
        raise ValueError(f"`fields` must be a non-empty sequence of field names, got {fields!r}")
    zips_qs = _resolve_zips(zips)
    buildings_qs = _resolve_buildings(buildings)
    _validate_fields(buildings_qs, list(fields))
    return _iter_buildings_by_zip(
        zips_qs, buildings_qs, list(fields), predicate, geometry, chunk_size, progress
    )


def _validate_fields(buildings: QuerySet, fields: list[str]) -> None:
    """Raise ValueError naming the first field the Building model does not have."""
    from django.core.exceptions import FieldError

    try:
        buildings.values(*fields).query.get_compiler(buildings.db).as_sql()
    except FieldError as exc:
        raise ValueError(f"`fields`: {exc}") from exc


def _iter_buildings_by_zip(
    zips: QuerySet,
    buildings: QuerySet,
    fields: list[str],
    predicate: str,
    geometry: str,
    chunk_size: int,
    progress: bool,
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield what :func:`iter_buildings_by_zip` promises (arguments already checked)."""
    from tqdm.auto import tqdm

    from .loaders import read_frame

    total = zips.count() if progress else None
    for code, queryset in tqdm(
        _zip_querysets(zips, buildings, predicate),
        total=total,
        unit="ZIP",
        desc="ZIPs",
        disable=not progress,
    ):
        frame = read_frame(
            queryset.order_by("pk"),
            fields,
            chunk_size=chunk_size,
            geometry=geometry,
            engine="dbapi",  # the ZIP boundary parameter cannot be bound by ADBC
        )
        yield code, frame


def plot_choropleth(
    summary: pd.DataFrame,
    zips: QuerySet | str | None = None,
    column: str = "buildings_per_km2",
    ax: Axes | None = None,
    *,
    cmap: str = "viridis",
    log_scale: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw a choropleth map of one summary column by ZIP (matplotlib only, no geopandas).

    Parameters
    ----------
    summary : pandas.DataFrame
        A table indexed by ZIP code, such as :func:`summarize_by_zip` returns.
    zips : QuerySet or str, optional
        Where the ZIP shapes come from: a ZipCode QuerySet or a state code. By default the ZIPs
        whose codes are in ``summary``'s index.
    column : str
        The column to map (default ``"buildings_per_km2"``).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made if omitted.
    cmap : str
        Matplotlib colormap name.
    log_scale : bool
        Logarithmic colour scale (default; densities span orders of magnitude). ZIPs with a
        value of 0 or NaN are drawn in light grey.
    title : str, optional
        Axes title (default: the column name).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.

    Raises
    ------
    ValueError
        If ``column`` is not in ``summary``, or no ZIP of ``summary`` has a shape.

    Examples
    --------
    >>> from analysis_lib import plot_choropleth, summarize_by_zip
    >>> ax = plot_choropleth(summarize_by_zip("MA"))  # doctest: +SKIP
    >>> ax.figure.savefig("reports/ma_buildings_per_km2.png")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import numpy as np
    import shapely
    from matplotlib.collections import PathCollection
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.path import Path

    from project.buildings.models import ZipCode

    if column not in summary.columns:
        raise ValueError(
            f"`column` was {column!r} but the summary has only {list(summary.columns)}"
        )
    zips_qs = (
        ZipCode.objects.filter(code__in=list(summary.index))
        if zips is None
        else _resolve_zips(zips)
    )
    shapes = _load_zips(zips_qs)["boundary"]
    values = summary[column].reindex(shapes.index).astype(float)
    if shapes.empty:
        raise ValueError("no ZIP of the summary has a shape in the database")

    def to_path(geom) -> Path:
        rings = []
        for polygon in shapely.get_parts(geom):
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
            [to_path(geom) for geom in shapes],
            facecolors=colors,
            edgecolors="white",
            linewidths=0.2,
        )
    )
    xmin, ymin, xmax, ymax = shapely.total_bounds(shapes.to_numpy())
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    # Degrees of longitude are shorter than degrees of latitude away from the equator.
    ax.set_aspect(1.0 / np.cos(np.radians((ymin + ymax) / 2.0)))
    ax.figure.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap=colormap), ax=ax, label=column, shrink=0.8
    )
    ax.set_title(title if title is not None else column)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    return ax
