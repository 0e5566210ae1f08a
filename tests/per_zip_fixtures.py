"""Small seeded data sets for the per-ZIP tests, with the awkward cases placed on purpose.

ZIPs (state "MA", at realistic longitudes so that the R*Tree's float32 rounding matters):

* ``02101``..``02112``: a 4 x 3 grid of square cells, 0.02 degrees wide, sharing edges;
* ``02105`` is a MultiPolygon: its grid cell with a square hole, plus a detached second part;
* ``02120``: an island ZIP filling ``02105``'s hole;
* ``02150``: a detached square whose edges are not float32 numbers (the grid's are);
* ``02199``: a ZIP far away with no buildings.

Buildings: seeded random rotated rectangles over the grid (some straddle borders, a few lie
outside every ZIP), plus fixed ones: inside the hole, in the detached part, sharing an edge with
a border from inside, a box starting 1e-9 degrees inside a ZIP's west edge (the R*Tree rounds
it outwards), and a square whose centroid lies exactly on the border between two ZIPs.
"""

from __future__ import annotations

import math

import numpy as np

X0, Y0, CELL = -71.25, 42.25, 0.02  # the grid's south-west corner and cell size (exact in binary)
GRID_COLUMNS, GRID_ROWS = 4, 3
HOLE = (0.25, 0.75)  # the hole of 02105, as fractions of its cell
DETACHED = (X0 + 5 * CELL, Y0, X0 + 5.5 * CELL, Y0 + 0.5 * CELL)
OFF_GRID = (-70.7, 42.3, -70.68, 42.32)  # -70.7 and 42.3 are not float32 numbers
FAR_AWAY = (-70.0, 41.0, -69.98, 41.02)
USE_TYPES = ("residential", "commercial", "industrial", "institutional", "other")


def cell_bbox(column: int, row: int) -> tuple[float, float, float, float]:
    x, y = X0 + column * CELL, Y0 + row * CELL
    return (x, y, x + CELL, y + CELL)


def zip_code(column: int, row: int) -> str:
    return f"021{row * GRID_COLUMNS + column + 1:02d}"


def make_zips() -> dict[str, object]:
    """Create the ZIPs; return them by code."""
    from django.contrib.gis.geos import MultiPolygon, Polygon

    from project.buildings.models import ZipCode

    zips = {}
    for row in range(GRID_ROWS):
        for column in range(GRID_COLUMNS):
            code = zip_code(column, row)
            x0, y0, x1, y1 = cell_bbox(column, row)
            if code == "02105":
                hx0, hy0 = x0 + HOLE[0] * CELL, y0 + HOLE[0] * CELL
                hx1, hy1 = x0 + HOLE[1] * CELL, y0 + HOLE[1] * CELL
                shell = ((x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0))
                hole = ((hx0, hy0), (hx0, hy1), (hx1, hy1), (hx1, hy0), (hx0, hy0))
                boundary = MultiPolygon(Polygon(shell, hole), Polygon.from_bbox(DETACHED))
                island = MultiPolygon(Polygon.from_bbox((hx0, hy0, hx1, hy1)))
                island.srid = 4326
                zips["02120"] = ZipCode.objects.create(
                    code="02120", state="MA", city="Island", boundary=island
                )
            else:
                boundary = MultiPolygon(Polygon.from_bbox((x0, y0, x1, y1)))
            boundary.srid = 4326
            zips[code] = ZipCode.objects.create(
                code=code, state="MA", city=f"Cell {code}", boundary=boundary
            )
    off_grid = MultiPolygon(Polygon.from_bbox(OFF_GRID))
    off_grid.srid = 4326
    zips["02150"] = ZipCode.objects.create(
        code="02150", state="MA", city="Off grid", boundary=off_grid
    )
    far = MultiPolygon(Polygon.from_bbox(FAR_AWAY))
    far.srid = 4326
    zips["02199"] = ZipCode.objects.create(code="02199", state="MA", city="Far", boundary=far)
    return zips


def rectangle(cx: float, cy: float, length_m: float, width_m: float, angle: float):
    """A rotated rectangle around (cx, cy), sizes in metres, as a GEOS polygon in degrees."""
    from django.contrib.gis.geos import Polygon

    m_per_deg_y = 111_132.0
    m_per_deg_x = m_per_deg_y * math.cos(math.radians(cy))
    corners = []
    for dx, dy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        x = dx * length_m / 2
        y = dy * width_m / 2
        xr = x * math.cos(angle) - y * math.sin(angle)
        yr = x * math.sin(angle) + y * math.cos(angle)
        corners.append((cx + xr / m_per_deg_x, cy + yr / m_per_deg_y))
    corners.append(corners[0])
    return Polygon(corners, srid=4326)


def bbox_polygon(x0: float, y0: float, x1: float, y1: float):
    from django.contrib.gis.geos import Polygon

    polygon = Polygon.from_bbox((x0, y0, x1, y1))
    polygon.srid = 4326
    return polygon


def special_buildings() -> dict[str, object]:
    """The hand-placed buildings, by name (geometries only)."""
    x0, y0, x1, y1 = cell_bbox(1, 1)  # 02106
    hole_x0, hole_y0 = X0 + (0 + HOLE[0]) * CELL, Y0 + (1 + HOLE[0]) * CELL
    c0, c1 = cell_bbox(0, 0), cell_bbox(1, 0)  # 02101 | 02102, border at x = c0[2]
    eps = 2.0**-12  # about 20 m; dyadic, so the centroid is computed exactly
    return {
        # inside the hole of 02105: belongs to the island 02120, not to 02105
        "in_hole": bbox_polygon(
            hole_x0 + 0.001, hole_y0 + 0.001, hole_x0 + 0.0012, hole_y0 + 0.0012
        ),
        # inside the detached part of 02105
        "in_detached": bbox_polygon(
            DETACHED[0] + 0.001, DETACHED[1] + 0.001, DETACHED[0] + 0.0012, DETACHED[1] + 0.0012
        ),
        # sharing its south edge with 02106's south border, from inside: within 02106
        "on_border_inside": bbox_polygon(x0 + 0.005, y0, x0 + 0.0052, y0 + 0.0002),
        # straddling the border between 02101 and 02102: within neither
        "straddling": bbox_polygon(c0[2] - 0.0001, c0[1] + 0.005, c0[2] + 0.0003, c0[1] + 0.0052),
        # centroid exactly on the 02101 | 02102 border: centroid rule gives 02101 (lower code)
        "centroid_on_border": bbox_polygon(
            c1[0] - eps, c1[1] + 8 * eps, c1[0] + eps, c1[1] + 10 * eps
        ),
        # 1e-9 degrees inside 02150's west edge, the ZIP's bounding-box minimum: the R*Tree
        # stores its xmin rounded down to float32, below the ZIP's xmin
        "near_bbox_edge": bbox_polygon(
            OFF_GRID[0] + 1e-9, OFF_GRID[1] + 0.01, OFF_GRID[0] + 0.0002, OFF_GRID[1] + 0.0102
        ),
        "in_off_grid": bbox_polygon(
            OFF_GRID[0] + 0.005, OFF_GRID[1] + 0.005, OFF_GRID[0] + 0.0053, OFF_GRID[1] + 0.0052
        ),
        # outside every ZIP
        "outside": bbox_polygon(X0 - 0.01, Y0 - 0.01, X0 - 0.0098, Y0 - 0.0098),
    }


def make_buildings(seed: int, n: int = 400) -> dict[str, int]:
    """Create ``n`` random buildings plus the special ones; return the special ones' ids."""
    from project.buildings.models import Building

    rng = np.random.default_rng(seed)
    width = GRID_COLUMNS * CELL
    height = GRID_ROWS * CELL
    rows = []
    for _ in range(n):
        cx = X0 - 0.002 + rng.random() * (width + 0.004)
        cy = Y0 - 0.002 + rng.random() * (height + 0.004)
        length = float(rng.uniform(8, 120))
        geom = rectangle(cx, cy, length, length * float(rng.uniform(0.3, 1.0)), rng.random() * 3)
        rows.append(geom)
    special = special_buildings()
    buildings = []
    for geom in [*rows, *special.values()]:
        buildings.append(
            Building(
                boundary=geom,
                footprint_m2=float(np.round(rng.lognormal(5, 0.8), 2)),
                height_m=None if rng.random() < 0.15 else float(np.round(rng.uniform(3, 40), 1)),
                year_built=None if rng.random() < 0.2 else int(rng.integers(1800, 2025)),
                use_type=USE_TYPES[int(rng.integers(0, len(USE_TYPES)))],
            )
        )
    created = Building.objects.bulk_create(buildings)
    return {name: b.pk for name, b in zip(special, created[n:], strict=True)}


def reference_summary(zips, predicate: str = "within"):
    """The per-ZIP summary computed the plain way: the stock lookups, then pandas.

    ``within``: ``Building.objects.filter(boundary__within=zip.boundary)`` per ZIP (GeoDjango's
    full scan). ``centroid``: the stock ``Centroid`` annotation with ``__intersects``, ties to the
    lowest code. Areas are geodesic (pyproj.Geod), independent of the library's projection.
    """
    import pandas as pd
    import shapely
    from django.contrib.gis.db.models.functions import Centroid
    from pyproj import Geod

    from project.buildings.models import Building

    fields = ["id", "footprint_m2", "height_m", "year_built", "use_type"]
    frames = {}
    for z in zips.order_by("code"):
        if predicate == "within":
            qs = Building.objects.filter(boundary__within=z.boundary)
        else:
            qs = Building.objects.annotate(c=Centroid("boundary")).filter(c__intersects=z.boundary)
        frames[z.code] = pd.DataFrame(list(qs.values_list(*fields)), columns=fields)
    if predicate == "centroid":  # a building on a shared border goes to the lowest code
        seen: set[int] = set()
        for code in sorted(frames):
            frame = frames[code]
            frames[code] = frame[~frame["id"].isin(seen)]
            seen.update(frame["id"])
    geod = Geod(ellps="WGS84")
    rows = {}
    for z in zips.order_by("code"):
        frame = frames[z.code]
        n = len(frame)
        # Geod's area is signed by ring orientation: exteriors counter-clockwise, holes clockwise.
        boundary = shapely.orient_polygons(shapely.from_wkb(bytes(z.boundary.wkb)))
        area = geod.geometry_area_perimeter(boundary)[0] / 1e6
        height = frame["height_m"].astype(float)
        years = frame["year_built"].astype(float)
        row = {
            "n_buildings": n,
            "footprint_total_m2": float(frame["footprint_m2"].sum()),
            "footprint_mean_m2": frame["footprint_m2"].mean() if n else np.nan,
            "footprint_median_m2": frame["footprint_m2"].median() if n else np.nan,
            "height_mean_m": height.mean(),
            "height_max_m": height.max(),
            "year_built_median": years.median() if years.notna().any() else np.nan,
        }
        for use in USE_TYPES:
            row[f"share_{use}"] = (frame["use_type"] == use).mean() if n else np.nan
        row["area_km2"] = area
        row["buildings_per_km2"] = n / area
        rows[z.code] = row
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "zip_code"
    return summary, {code: set(frame["id"]) for code, frame in frames.items()}


_DATABASE_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from analysis_lib import setup_django
setup_django()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from tests.per_zip_fixtures import make_buildings, make_zips
make_zips()
make_buildings(seed={seed}, n={n})
"""


def make_database_file(path, seed: int = 21, n: int = 300) -> str:
    """Fill a new SpatiaLite file with the ZIPs and ``n`` buildings, in a child process.

    For tests that run the code under test in a fresh process (which cannot see the test
    database of pytest-django). Returns the ``DATABASE_URL`` of the file.
    """
    from tests.fresh import ChildFailed, run_python
    from tests.helpers import PROJECT_ROOT

    url = f"spatialite:///{path}"
    script = _DATABASE_SCRIPT.format(root=str(PROJECT_ROOT), seed=seed, n=n)
    try:
        run_python(script, database_url=url)
    except ChildFailed as error:
        raise RuntimeError(f"could not build the test database {path}:\n{error}") from None
    return url
