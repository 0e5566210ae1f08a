"""Deterministic synthetic states (Massachusetts by default): ZIP cells and building footprints.

Nothing here touches the database; :mod:`project.buildings.bulkload` writes what
this module generates, and the ``generate_buildings`` command (with its alias
``generate_massachusetts``) ties both together.

* **ZIP cells** are the Voronoi cells of the real ZIP centroids of one or more
  states (the ``zipcodes`` package: its ``STANDARD`` codes, 494 in Massachusetts,
  30,003 in its 54 states and territories), clipped to a plausible outline of
  each state: the concave hull of the state's centroids, buffered by about 4 km.
  The cells do not depend on the seed, are computed once per process and are
  valid, non-overlapping ``MultiPolygon`` s in WGS 84 (SRID 4326). The Voronoi
  diagram is computed in a locally isotropic plane (longitude scaled by the
  cosine of the mean latitude), which is an affine map of longitude/latitude,
  so cell edges stay straight lines in SRID 4326 and neighbours share vertices.
  For several states the diagram is one diagram of all their centroids (so the
  cells of neighbouring states do not overlap beyond rounding), each cell clipped
  to its own state's outline; a state's cells therefore differ between a one-state
  and a many-state run, a little inside the state (the shared plane's scale) and
  more along its borders. A few ZIP codes share their
  centroid with another (21 places in the package); every one but the first by
  code is moved 200 m, so each cell has its own point.
* **Buildings** are rotated rectangles with lognormal areas by use type, most of
  them aligned with a per-cell street direction. Each cell gets its share of the
  requested total (more buildings per km² in small, urban cells), and its own
  random generator seeded from ``(seed, cell index)``: the buildings of a cell
  do not depend on the batch size or on the other cells, so memory stays
  bounded and the same seed gives byte-identical data. Centres are drawn inside
  the cell (a mix of a cluster around the real ZIP centroid and a uniform
  spread), so the ZIP holding a building's centroid is known without a spatial
  join; buildings near an edge straddle it, as real ones do.
* ``footprint_m2`` is the rectangle's area ``length * width`` in m². The corner
  offsets are converted to degrees with the WGS 84 meridional and prime-vertical
  radii at the building's latitude, so the polygon's area in any equal-area
  projection equals ``footprint_m2`` to about one part in a million.

The module does not use pyproj: importing the pyproj wheel (which bundles its
own PROJ) after ``mod_spatialite`` has loaded Debian's PROJ makes the process
abort at exit (``free(): invalid pointer`` in ``UnitOfMeasure::~UnitOfMeasure``),
and the management command runs with a SpatiaLite connection open.

Cells are visited in Hilbert-curve order of their centroids and the buildings of
a cell are sorted along the same curve, so consecutive rows are close in space
(the R*Tree or GiST index built after the load is faster and tighter for it).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import shapely

#: Values of ``Building.UseType``, in the order the generator indexes them.
USE_TYPES: tuple[str, ...] = ("residential", "commercial", "industrial", "institutional", "other")
_USE_P = np.array([0.74, 0.09, 0.03, 0.03, 0.11])
# footprint area in m²: lognormal median and sigma of log, per use type
_AREA_MEDIAN = np.array([130.0, 650.0, 1800.0, 1200.0, 35.0])
_AREA_SIGMA = np.array([0.45, 0.8, 0.9, 0.8, 0.5])
#: Bounds every footprint is clipped to, in m².
FOOTPRINT_RANGE_M2: tuple[float, float] = (12.0, 40_000.0)
# height in metres: lognormal median and sigma of log, per use type
_HEIGHT_MEDIAN = np.array([7.5, 9.0, 9.0, 12.0, 3.5])
_HEIGHT_SIGMA = np.array([0.3, 0.6, 0.3, 0.5, 0.2])
_HEIGHT_NULL_P = 0.12
_YEAR_NULL_P = 0.18
_YEAR_NEWEST = 2024
_YEAR_OLDEST = 1700

# cells: outline and allocation
_HULL_RATIO = 0.1  # shapely.concave_hull ratio (0 = most concave, 1 = convex hull)
_OUTLINE_BUFFER_DEG = 0.04  # about 4.4 km, in degrees of latitude
_AREA_EXPONENT = 0.4  # buildings per cell ~ area**0.4: density falls as cells grow
_ALLOC_SIGMA = 0.25  # lognormal noise on each cell's share
_CORE_FRACTION = 0.4  # share of a cell's buildings clustered around its ZIP centroid
_CORE_SIGMA = 0.35  # that cluster's standard deviation, as a fraction of sqrt(cell area)
_DUPLICATE_SHIFT_DEG = 0.0018  # about 200 m: moves a ZIP centroid that repeats another's
#: The ``--states`` value that means every state the ``zipcodes`` package has.
ALL_STATES = "ALL"

# WGS 84
_A = 6_378_137.0
_E2 = 6.694379990141317e-3


@dataclass(frozen=True)
class ZipCell:
    """One synthetic ZIP code area.

    Attributes
    ----------
    index : int
        Position in the code-sorted list of cells (part of the cell's RNG seed).
    code, city, county, state : str
        From the ``zipcodes`` package (``state`` is the two-letter code).
    lon, lat : float
        The real ZIP centroid, in degrees (moved by 200 m when another ZIP code
        has the same one).
    boundary : shapely.MultiPolygon
        The clipped Voronoi cell, in WGS 84 degrees.
    area_km2 : float
        Area of ``boundary`` (degrees² times the local metres per degree at the
        cell's centroid; within 0.1 % of the equal-area value).
    """

    index: int
    code: str
    city: str
    county: str
    state: str
    lon: float
    lat: float
    boundary: shapely.MultiPolygon
    area_km2: float


@dataclass(frozen=True)
class BuildingBatch:
    """Columns of consecutive generated buildings (numpy arrays of equal length).

    Attributes
    ----------
    number : numpy.ndarray
        int64 ordinal of each building, 1-based and unique over the whole run: the
        database id and the ``syn-<number>`` source id.
    coords : numpy.ndarray
        float64 ``(n, 5, 2)``: the closed exterior ring (lon, lat) of each rectangle.
    footprint_m2 : numpy.ndarray
        float64 rectangle area in m².
    height_m : numpy.ndarray
        float64 height in metres, NaN where the height is unknown (NULL).
    year_built : numpy.ndarray
        int64 year, 0 where unknown (NULL).
    use_type : numpy.ndarray
        int8 index into :data:`USE_TYPES`.
    zip_index : numpy.ndarray
        int32 :attr:`ZipCell.index` of the cell holding the building's centroid.
    """

    number: np.ndarray
    coords: np.ndarray
    footprint_m2: np.ndarray
    height_m: np.ndarray
    year_built: np.ndarray
    use_type: np.ndarray
    zip_index: np.ndarray

    def __len__(self) -> int:
        return len(self.number)

    def take(self, start: int, stop: int) -> BuildingBatch:
        """Rows ``start:stop`` (views, no copy)."""
        return BuildingBatch(
            **{name: getattr(self, name)[start:stop] for name in self.__dataclass_fields__}
        )

    @classmethod
    def concat(cls, batches: list[BuildingBatch]) -> BuildingBatch:
        """Concatenate batches, in order."""
        if len(batches) == 1:
            return batches[0]
        return cls(
            **{
                name: np.concatenate([getattr(b, name) for b in batches])
                for name in cls.__dataclass_fields__
            }
        )


def hilbert_key(
    x: np.ndarray, y: np.ndarray, bounds: tuple[float, float, float, float], order: int = 16
) -> np.ndarray:
    """Position of points along a Hilbert curve filling ``bounds``.

    Parameters
    ----------
    x, y : numpy.ndarray
        Coordinates.
    bounds : tuple
        ``(xmin, ymin, xmax, ymax)`` of the grid the curve fills: floats, or arrays
        of the points' shape giving each point its own grid (one per cell).
    order : int
        The grid has ``2**order`` cells per side (1 to 31).

    Returns
    -------
    numpy.ndarray
        uint64 keys; sorting by them orders the points along the curve.

    Raises
    ------
    ValueError
        If ``order`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = np.array([0.0, 0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0])
    >>> hilbert_key(x, y, (0, 0, 1, 1), order=1).tolist()
    [0, 1, 2, 3]
    """
    if not 1 <= order <= 31:
        raise ValueError(f"order must be in 1..31, got {order}")
    side = (1 << order) - 1
    xmin, ymin, xmax, ymax = bounds
    sx = side / np.maximum(np.subtract(xmax, xmin), 1e-300)
    sy = side / np.maximum(np.subtract(ymax, ymin), 1e-300)
    xi = np.clip(np.rint((np.asarray(x) - xmin) * sx), 0, side).astype(np.int64)
    yi = np.clip(np.rint((np.asarray(y) - ymin) * sy), 0, side).astype(np.int64)
    key = np.zeros(xi.shape, dtype=np.int64)
    s = 1 << (order - 1)
    while s > 0:
        rx = (xi & s) > 0
        ry = (yi & s) > 0
        key += (s * s) * ((3 * rx) ^ ry)
        # rotate the quadrant so that the curve stays continuous
        flip = rx & ~ry
        xi = np.where(flip, side - xi, xi)
        yi = np.where(flip, side - yi, yi)
        swap = ~ry
        xi, yi = np.where(swap, yi, xi), np.where(swap, xi, yi)
        s >>= 1
    return key.astype(np.uint64)


def _to_multipolygon(geom: shapely.Geometry) -> shapely.MultiPolygon:
    """Collect the polygonal parts of ``geom`` into one MultiPolygon."""
    parts = [
        p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon) and not p.is_empty
    ]
    return shapely.MultiPolygon(parts)


@lru_cache(maxsize=1)
def _standard_records() -> tuple[dict, ...]:
    """Every ``STANDARD`` ZIP code with coordinates, by code, with float ``lon``/``lat``.

    A centroid shared by several codes is kept by the first code and moved by about
    200 m for each later one (around a circle), so that Voronoi cells get one point each.
    """
    import zipcodes

    records = sorted(
        (r for r in zipcodes.list_all() if r.get("zip_code_type") == "STANDARD"),
        key=lambda r: r["zip_code"],
    )
    out: list[dict] = []
    seen: dict[tuple[str, str], int] = {}
    for r in records:
        if not (r.get("lat") and r.get("long")):
            continue
        key = (r["lat"], r["long"])
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        lon, lat = float(r["long"]), float(r["lat"])
        if repeat:
            turn = 2.0 * math.pi * (repeat - 1) / 6.0
            lon += _DUPLICATE_SHIFT_DEG * math.cos(turn) / math.cos(math.radians(lat))
            lat += _DUPLICATE_SHIFT_DEG * math.sin(turn)
        out.append({**r, "lon": lon, "lat": lat})
    return tuple(out)


@lru_cache(maxsize=1)
def available_states() -> tuple[str, ...]:
    """Return the codes of the states (and territories) the generator can make, sorted.

    Returns
    -------
    tuple of str
        Every state with at least three ``STANDARD`` ZIP codes with coordinates in
        the ``zipcodes`` package (54, DC and Puerto Rico included).

    Examples
    --------
    >>> "MA" in available_states() and "RI" in available_states()
    True
    """
    counts: dict[str, int] = {}
    for r in _standard_records():
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return tuple(sorted(state for state, n in counts.items() if n >= 3))


def parse_states(value: str | Sequence[str], name: str = "states") -> tuple[str, ...]:
    """Turn ``"RI"``, ``"RI,CT"``, ``["RI", "CT"]`` or ``"ALL"`` into sorted state codes.

    Parameters
    ----------
    value : str or sequence of str
        One code, a comma-separated list, a list of codes, or ``"ALL"`` (every
        state of :func:`available_states`). Case and spaces around codes are ignored.
    name : str
        The argument's name in error messages (``"--states"`` for the command).

    Returns
    -------
    tuple of str
        Distinct upper-case codes, sorted.

    Raises
    ------
    TypeError
        If ``value`` is not a str or a list/tuple of str.
    ValueError
        If it is empty, names a state twice, mixes ``ALL`` with codes, or names a
        state the ``zipcodes`` package has no (or fewer than three) ZIP codes for.

    Examples
    --------
    >>> parse_states("ri, ct")
    ('CT', 'RI')
    >>> len(parse_states("ALL"))
    54
    """
    from analysis_lib.checks import fail_type, fail_value

    expected = "state codes such as 'RI' or 'RI,CT', or 'ALL'"
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise fail_type(name, "a str or a list of str (" + expected + ")", value)
    codes = [item.strip().upper() for item in items]
    if not codes or any(not code for code in codes):
        raise fail_value(name, expected + ", without empty entries", value)
    if ALL_STATES in codes:
        if len(codes) > 1:
            raise fail_value(name, f"either {ALL_STATES!r} alone or state codes", value)
        return available_states()
    known = set(available_states())
    seen: set[str] = set()
    for code in codes:
        if code not in known:
            raise fail_value(
                name,
                "codes of states with ZIP codes in the zipcodes package "
                f"({', '.join(available_states())}) or {ALL_STATES!r}",
                code,
            )
        if code in seen:
            raise fail_value(name, "distinct state codes", code)
        seen.add(code)
    return tuple(sorted(seen))


def _plane(lon: np.ndarray, lat: np.ndarray):
    """Forward and inverse maps to the locally isotropic plane of these points."""
    lon0, lat0 = float(lon.mean()), float(lat.mean())
    k = math.cos(math.radians(lat0))

    def to_plane(c: np.ndarray) -> np.ndarray:
        return np.column_stack([(c[:, 0] - lon0) * k, c[:, 1] - lat0])

    def to_lonlat(c: np.ndarray) -> np.ndarray:
        return np.column_stack([c[:, 0] / k + lon0, c[:, 1] + lat0])

    return to_plane, to_lonlat


def _outline(points: shapely.MultiPoint) -> shapely.Geometry:
    """Return a plausible state outline: the buffered concave hull of its ZIP points."""
    return shapely.concave_hull(points, ratio=_HULL_RATIO).buffer(_OUTLINE_BUFFER_DEG)


def _one_state_cells(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Voronoi cells of one state's points clipped to its outline, in lon/lat."""
    to_plane, to_lonlat = _plane(lon, lat)
    points = shapely.multipoints(to_plane(np.column_stack([lon, lat])))
    outline = _outline(points)
    voronoi = shapely.voronoi_polygons(points, extend_to=outline, ordered=True)
    cells = shapely.intersection(shapely.get_parts(voronoi), outline)
    return shapely.transform(cells, to_lonlat)


def _many_state_cells(lon: np.ndarray, lat: np.ndarray, state: np.ndarray) -> np.ndarray:
    """One Voronoi diagram of all points, each cell clipped to its own state's outline."""
    to_plane, to_lonlat = _plane(lon, lat)
    xy = to_plane(np.column_stack([lon, lat]))
    outlines = {}
    for code in np.unique(state):
        mine = state == code
        # each outline in its own state's plane (as for one state), then in the shared plane
        s_plane, s_lonlat = _plane(lon[mine], lat[mine])
        own = _outline(shapely.multipoints(s_plane(np.column_stack([lon[mine], lat[mine]]))))
        outlines[code] = shapely.transform(shapely.transform(own, s_lonlat), to_plane)
    extent = shapely.box(*shapely.total_bounds(list(outlines.values())))
    voronoi = shapely.get_parts(
        shapely.voronoi_polygons(shapely.multipoints(xy), extend_to=extent, ordered=True)
    )
    cells = np.empty(len(xy), dtype=object)
    for code, outline in outlines.items():
        mine = np.flatnonzero(state == code)
        shapely.prepare(outline)
        inside = shapely.contains(outline, voronoi[mine])  # most cells: nothing to clip
        cells[mine[inside]] = voronoi[mine[inside]]
        cells[mine[~inside]] = shapely.intersection(voronoi[mine[~inside]], outline)
    return shapely.transform(cells, to_lonlat)


@lru_cache(maxsize=4)
def region_cells(states: tuple[str, ...]) -> tuple[ZipCell, ...]:
    """Compute the synthetic ZIP cells of one or more states, sorted by code (once per process).

    Parameters
    ----------
    states : tuple of str
        Distinct codes of :func:`available_states` (see :func:`parse_states`).

    Returns
    -------
    tuple of ZipCell
        One cell per ``STANDARD`` ZIP code of the states (494 for ``("MA",)``,
        30,003 for every state), indexed 0.. in code order.

    Raises
    ------
    TypeError, ValueError
        As :func:`parse_states`, for a bad ``states``.

    Examples
    --------
    >>> cells = region_cells(("CT", "RI"))
    >>> len(cells), sorted({c.state for c in cells})
    (346, ['CT', 'RI'])
    """
    states = parse_states(states)
    wanted = set(states)
    records = [r for r in _standard_records() if r["state"] in wanted]
    lon = np.array([r["lon"] for r in records])
    lat = np.array([r["lat"] for r in records])
    if len(states) == 1:
        cells = _one_state_cells(lon, lat)
    else:
        cells = _many_state_cells(lon, lat, np.array([r["state"] for r in records]))
    if not shapely.contains_xy(cells, lon, lat).all():  # pragma: no cover - GEOS contract
        raise RuntimeError("a Voronoi cell does not hold its own ZIP centroid")
    # local scale at each cell's centroid: within 0.1 % of an equal-area projection
    # here, and no pyproj (see the module docstring)
    m_lon, m_lat = _metres_per_degree(shapely.get_y(shapely.centroid(cells)))
    areas = shapely.area(cells) * m_lon * m_lat
    return tuple(
        ZipCell(
            index=i,
            code=r["zip_code"],
            city=r.get("city") or "",
            county=r.get("county") or "",
            state=r["state"],
            lon=float(lon[i]),
            lat=float(lat[i]),
            boundary=_to_multipolygon(cells[i]),
            area_km2=float(areas[i] / 1e6),
        )
        for i, r in enumerate(records)
    )


def zip_cells(state: str = "MA") -> tuple[ZipCell, ...]:
    """Compute the synthetic ZIP cells of one state, sorted by code (once per process).

    Parameters
    ----------
    state : str
        Two-letter state code known to the ``zipcodes`` package.

    Returns
    -------
    tuple of ZipCell
        One cell per ``STANDARD`` ZIP code of the state (494 for ``"MA"``).

    Raises
    ------
    ValueError
        If the state has fewer than three ZIP codes with coordinates.

    Examples
    --------
    >>> cells = zip_cells("MA")
    >>> len(cells), cells[0].code, cells[0].boundary.geom_type
    (494, '01001', 'MultiPolygon')
    """
    return region_cells(parse_states(state, name="state"))


def allocate_counts(cells: tuple[ZipCell, ...], total: int, seed: int) -> np.ndarray:
    """Split ``total`` buildings over the cells, more per km² in small cells.

    Each cell's weight is ``area_km2 ** 0.4`` times a lognormal factor drawn from
    the seed; the largest-remainder method turns the shares into integers that
    add up to ``total`` exactly.

    Parameters
    ----------
    cells : tuple of ZipCell
        From :func:`zip_cells`.
    total : int
        Number of buildings, ``>= 0``.
    seed : int
        Seed, ``>= 0``.

    Returns
    -------
    numpy.ndarray
        int64 count per cell (same order as ``cells``), summing to ``total``.

    Raises
    ------
    ValueError
        If ``total`` or ``seed`` is negative.

    Examples
    --------
    >>> counts = allocate_counts(zip_cells(), 1000, seed=1)
    >>> int(counts.sum())
    1000
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng([seed, len(cells), 0xA110C])
    area = np.array([c.area_km2 for c in cells])
    weight = area**_AREA_EXPONENT * rng.lognormal(0.0, _ALLOC_SIGMA, len(cells))
    quota = total * weight / weight.sum()
    counts = np.floor(quota).astype(np.int64)
    remainder = total - int(counts.sum())
    if remainder:
        order = np.argsort(-(quota - counts), kind="stable")
        counts[order[:remainder]] += 1
    return counts


def _metres_per_degree(lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metres per degree of longitude and of latitude on WGS 84 at ``lat``."""
    phi = np.radians(lat)
    w = 1.0 - _E2 * np.sin(phi) ** 2
    prime_vertical = _A / np.sqrt(w)
    meridional = _A * (1.0 - _E2) / (w * np.sqrt(w))
    return prime_vertical * np.cos(phi) * (np.pi / 180.0), meridional * (np.pi / 180.0)


def _sample_centres(rng: np.random.Generator, cell: ZipCell, n: int) -> np.ndarray:
    """``n`` points strictly inside the cell: a cluster at the ZIP centroid plus a spread."""
    boundary = cell.boundary
    shapely.prepare(boundary)
    xmin, ymin, xmax, ymax = boundary.bounds
    m_lon, m_lat = _metres_per_degree(np.array([cell.lat]))
    sigma_m = _CORE_SIGMA * math.sqrt(cell.area_km2 * 1e6)
    sigma = (sigma_m / float(m_lon[0]), sigma_m / float(m_lat[0]))
    found: list[np.ndarray] = []
    have = 0
    while have < n:
        m = max(2 * (n - have), 64)
        core = rng.random(m) < _CORE_FRACTION
        x = np.where(core, rng.normal(cell.lon, sigma[0], m), rng.uniform(xmin, xmax, m))
        y = np.where(core, rng.normal(cell.lat, sigma[1], m), rng.uniform(ymin, ymax, m))
        inside = shapely.contains_xy(boundary, x, y)
        found.append(np.column_stack([x[inside], y[inside]]))
        have += int(inside.sum())
    return np.concatenate(found)[:n]


@dataclass(frozen=True)
class _CellDraws:
    """The random draws of one cell, in the order its generator makes them."""

    cell: ZipCell
    street_angle: float
    centres: np.ndarray
    use: np.ndarray
    area: np.ndarray
    aspect_draw: np.ndarray
    aligned_draw: np.ndarray
    turn_draw: np.ndarray
    angle_normal: np.ndarray
    angle_uniform: np.ndarray
    height_draw: np.ndarray
    height_null_draw: np.ndarray
    year_draw: np.ndarray
    year_null_draw: np.ndarray


def _draw_cell(cell: ZipCell, count: int, seed: int) -> _CellDraws:
    """Make every random draw of one cell with the cell's own generator (seeded by seed, index)."""
    rng = np.random.default_rng([seed, cell.index])
    street_angle = float(rng.uniform(0.0, np.pi / 2))
    centres = _sample_centres(rng, cell, count)
    use = rng.choice(len(USE_TYPES), size=count, p=_USE_P).astype(np.int8)
    area = rng.lognormal(np.log(_AREA_MEDIAN[use]), _AREA_SIGMA[use])
    aspect_draw = rng.exponential(0.45, count)
    aligned_draw = rng.random(count)
    turn_draw = rng.random(count)
    # both drawn for every building (the mix below picks one): keeps the stream fixed
    angle_normal = rng.normal(0.0, np.radians(3.0), count)
    angle_uniform = rng.uniform(0.0, np.pi, count)
    height_draw = rng.lognormal(np.log(_HEIGHT_MEDIAN[use]), _HEIGHT_SIGMA[use])
    height_null_draw = rng.random(count)
    year_draw = rng.exponential(60.0, count)
    year_null_draw = rng.random(count)
    return _CellDraws(
        cell,
        street_angle,
        centres,
        use,
        area,
        aspect_draw,
        aligned_draw,
        turn_draw,
        angle_normal,
        angle_uniform,
        height_draw,
        height_null_draw,
        year_draw,
        year_null_draw,
    )


def _assemble(draws: list[_CellDraws], first_number: int) -> BuildingBatch:
    """Turn the draws of consecutive cells into buildings, with numpy over all of them at once.

    Every step is element by element (or per cell, for the Hilbert sort), so a building does
    not depend on which other cells share the call: generating cells one by one or in groups
    gives the same bytes. One call per group keeps the cost per cell small when cells hold
    few buildings (30,003 cells for every state).
    """
    counts = np.array([len(d.use) for d in draws], dtype=np.int64)
    total = int(counts.sum())

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(d, name) for d in draws])

    def per_cell(values: list) -> np.ndarray:
        return np.repeat(np.asarray(values), counts)

    centres = np.concatenate([d.centres for d in draws]).reshape(total, 2)
    use = cat("use")
    area = np.clip(cat("area"), *FOOTPRINT_RANGE_M2)
    aspect = np.minimum(1.0 + cat("aspect_draw"), 4.0)
    length = np.sqrt(area * aspect)
    width = area / length
    aligned = cat("aligned_draw") < 0.8
    turn = (cat("turn_draw") < 0.5) * (np.pi / 2)
    street_angle = per_cell([d.street_angle for d in draws])
    angle = np.where(aligned, street_angle + turn + cat("angle_normal"), cat("angle_uniform"))
    height = np.clip(np.round(cat("height_draw"), 1), 2.5, 250.0)
    height[cat("height_null_draw") < _HEIGHT_NULL_P] = np.nan
    year = np.maximum(_YEAR_NEWEST - np.floor(cat("year_draw")), _YEAR_OLDEST)
    year = year.astype(np.int64)
    year[cat("year_null_draw") < _YEAR_NULL_P] = 0

    # corners: centre +- half length along the angle +- half width across it (CCW ring)
    m_lon, m_lat = _metres_per_degree(centres[:, 1])
    hl, hw = length / 2.0, width / 2.0
    cos, sin = np.cos(angle), np.sin(angle)
    ax, ay = hl * cos, hl * sin  # half-length vector, metres
    bx, by = -hw * sin, hw * cos  # half-width vector, metres
    sign_a = np.array([-1.0, 1.0, 1.0, -1.0, -1.0])
    sign_b = np.array([-1.0, -1.0, 1.0, 1.0, -1.0])
    dx = (sign_a * ax[:, None] + sign_b * bx[:, None]) / m_lon[:, None]
    dy = (sign_a * ay[:, None] + sign_b * by[:, None]) / m_lat[:, None]
    coords = np.stack([centres[:, :1] + dx, centres[:, 1:] + dy], axis=-1)

    # sort each cell's buildings along a Hilbert curve over the cell's own bounds: 2**10
    # steps across a cell, a few metres, plenty to group neighbours into leaves
    bounds = np.array([d.cell.boundary.bounds for d in draws])
    per_row = [np.repeat(bounds[:, k], counts) for k in range(4)]
    key = hilbert_key(centres[:, 0], centres[:, 1], tuple(per_row), order=10)
    position = np.repeat(np.arange(len(draws)), counts)
    order = np.lexsort((key, position))  # stable: by cell, then along its curve
    return BuildingBatch(
        number=np.arange(first_number, first_number + total, dtype=np.int64),
        coords=coords[order],
        footprint_m2=(length * width)[order],
        height_m=height[order],
        year_built=year[order],
        use_type=use[order],
        zip_index=per_cell([d.cell.index for d in draws]).astype(np.int32),
    )


def generate_cell(cell: ZipCell, count: int, seed: int, first_number: int) -> BuildingBatch:
    """Generate the ``count`` buildings of one cell with the cell's own random generator.

    Parameters
    ----------
    cell : ZipCell
        The cell; its ``index``, with ``seed``, seeds the generator.
    count : int
        Number of buildings to generate.
    seed : int
        Seed of the whole run, ``>= 0``.
    first_number : int
        :attr:`BuildingBatch.number` of the first building.

    Returns
    -------
    BuildingBatch
        The buildings, sorted along a Hilbert curve inside the cell.

    Examples
    --------
    >>> cell = zip_cells()[0]
    >>> batch = generate_cell(cell, 3, seed=42, first_number=1)
    >>> batch.coords.shape, batch.number.tolist()
    ((3, 5, 2), [1, 2, 3])
    """
    return _assemble([_draw_cell(cell, count, seed)], first_number)


def cell_order(cells: tuple[ZipCell, ...]) -> np.ndarray:
    """Order the cells along a Hilbert curve through their centroids.

    Parameters
    ----------
    cells : tuple of ZipCell
        From :func:`zip_cells`.

    Returns
    -------
    numpy.ndarray
        A permutation of ``range(len(cells))``.

    Examples
    --------
    >>> sorted(cell_order(zip_cells()).tolist()) == list(range(494))
    True
    """
    lon = np.array([c.lon for c in cells])
    lat = np.array([c.lat for c in cells])
    bounds = (lon.min(), lat.min(), lon.max(), lat.max())
    return np.argsort(hilbert_key(lon, lat, bounds), kind="stable")


def iter_buildings(
    total: int, seed: int, batch_size: int = 50_000, states: str | Sequence[str] = "MA"
) -> Iterator[BuildingBatch]:
    """Generate ``total`` buildings as batches of ``batch_size`` rows (the last may be short).

    Batching only regroups rows: the data are the same for every ``batch_size``.
    At most one batch plus one cell's buildings are in memory at a time.

    Parameters
    ----------
    total : int
        Number of buildings, ``>= 0``.
    seed : int
        Seed, ``>= 0``.
    batch_size : int
        Rows per batch, ``> 0``.
    states : str or sequence of str
        The states, as :func:`parse_states` reads them (``"MA"``, ``"RI,CT"``, ``"ALL"``).

    Yields
    ------
    BuildingBatch
        Consecutive buildings, numbered 1 to ``total``.

    Raises
    ------
    ValueError
        If an argument is out of range.

    Examples
    --------
    >>> sum(len(b) for b in iter_buildings(1000, seed=1, batch_size=300))
    1000
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    cells = region_cells(parse_states(states))
    counts = allocate_counts(cells, total, seed)
    pending: list[BuildingBatch] = []
    pending_rows = 0
    number = 1
    draws: list[_CellDraws] = []
    drawn = 0
    order = [int(i) for i in cell_order(cells) if counts[i]]
    for k, i in enumerate(order):
        # draw cell by cell, build the rows of a batch's worth of cells at once
        draws.append(_draw_cell(cells[i], int(counts[i]), seed))
        drawn += int(counts[i])
        if pending_rows + drawn < batch_size and k + 1 < len(order):
            continue
        pending.append(_assemble(draws, number))
        number += drawn
        pending_rows += drawn
        draws, drawn = [], 0
        if pending_rows < batch_size:
            continue
        rows = BuildingBatch.concat(pending)
        start = 0
        while pending_rows - start >= batch_size:
            yield rows.take(start, start + batch_size)
            start += batch_size
        pending = [rows.take(start, pending_rows)] if start < pending_rows else []
        pending_rows -= start
    if pending_rows:
        yield BuildingBatch.concat(pending)
