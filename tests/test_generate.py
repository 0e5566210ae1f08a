"""The synthetic Massachusetts generator and its bulk loader.

Transactions: the command wraps everything in ``transaction.atomic``; inside a
pytest-django test transaction that block is a savepoint, so most tests here run
in the ordinary rolled-back test transaction. The atomicity test runs both ways:
inside the test transaction and with ``transaction=True`` (a real commit, the
way ``manage.py`` runs), and checks that a failure midway leaves the previous
data, the R*Tree and the triggers exactly as they were.
"""

from __future__ import annotations

# pyproj must be imported before mod_spatialite is loaded into the process (the
# test database opens it): the pyproj wheel bundles its own PROJ, and importing
# it afterwards makes the interpreter abort at exit. Collection imports this
# module before any database access.
import pyproj  # isort: skip  # noqa: I001

import io
import sqlite3

import numpy as np
import pytest
import shapely
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import Count

from project.buildings import bulkload, synthetic
from project.buildings.models import Building, ZipCode
from tests.backends import IS_POSTGIS, IS_SPATIALITE, requires_spatialite

N = 3000
SEED = 7
IDX = "idx_buildings_building_boundary"
LAEA_MA = "+proj=laea +lat_0=42 +lon_0=-71.5 +ellps=WGS84 +units=m +no_defs"  # equal-area
LCC_MA = "+proj=lcc +lat_1=41.72 +lat_2=42.68 +lat_0=41 +lon_0=-71.5 +ellps=WGS84"  # conformal


def generate(**options) -> str:
    out = io.StringIO()
    options.setdefault("buildings", N)
    options.setdefault("seed", SEED)
    call_command("generate_massachusetts", no_progress=True, stdout=out, **options)
    return out.getvalue()


def stored_rows() -> list[tuple]:
    """Every building and ZIP row with its geometry exactly as the database stores it."""
    geometry = "boundary" if IS_SPATIALITE else "ST_AsEWKB(boundary)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, {geometry}, footprint_m2, height_m, year_built, use_type, source_id, "
            "zip_id FROM buildings_building ORDER BY id"
        )
        buildings = [(r[0], bytes(r[1]), *r[2:]) for r in cursor.fetchall()]
        cursor.execute(
            f"SELECT id, code, state, city, county, {geometry} FROM buildings_zipcode ORDER BY id"
        )
        zips = [(*r[:5], bytes(r[5])) for r in cursor.fetchall()]
    return buildings + zips


def building_frame():
    """Ids, shapely polygons, footprints and ZIP ids of all buildings, by id."""
    rows = list(
        Building.objects.order_by("id").values_list("id", "boundary", "footprint_m2", "zip_id")
    )
    ids = np.array([r[0] for r in rows])
    geoms = shapely.from_wkb([bytes(r[1].wkb) for r in rows])
    return ids, geoms, np.array([r[2] for r in rows]), np.array([r[3] for r in rows])


def zip_frame():
    rows = list(ZipCode.objects.order_by("id").values_list("id", "boundary"))
    return np.array([r[0] for r in rows]), shapely.from_wkb([bytes(r[1].wkb) for r in rows])


def small_square():
    from django.contrib.gis.geos import Polygon

    square = Polygon.from_bbox((-71.06, 42.36, -71.0599, 42.3601))
    square.srid = 4326
    return square


def triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
            ["buildings_building"],
        )
        return {r[0] for r in cursor.fetchall()}


def rtree_state() -> tuple[str, int, int]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT rtreecheck('{IDX}'), (SELECT count(*) FROM {IDX})")
        check, entries = cursor.fetchone()
    return check, entries, Building.objects.count()


# --------------------------------------------------------------------------- pure generation


def test_zip_cells_tile_a_state_outline():
    cells = synthetic.zip_cells()
    assert len(cells) == 494
    assert [c.code for c in cells] == sorted({c.code for c in cells})
    geoms = np.array([c.boundary for c in cells])
    assert all(g.geom_type == "MultiPolygon" for g in geoms)
    assert shapely.is_valid(geoms).all()
    assert shapely.contains_xy(geoms, [c.lon for c in cells], [c.lat for c in cells]).all()
    # no overlaps: pairwise intersections have (numerically) no area
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = left < right
    assert pairs.sum() > 1000  # neighbours share edges
    overlap = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]])).sum()
    total = shapely.area(geoms).sum()
    assert overlap < 1e-9 * total
    assert shapely.area(shapely.union_all(geoms)) == pytest.approx(total, rel=1e-9)
    # a plausible Massachusetts: ~21,000 km² of land plus coast; Boston cells are small
    assert 18_000 < sum(c.area_km2 for c in cells) < 30_000
    assert min(c.area_km2 for c in cells) < 2 < 100 < max(c.area_km2 for c in cells)


@pytest.mark.parametrize("order", [1, 2, 5, 10, 16])
def test_hilbert_key_matches_the_reference_algorithm(order):
    def reference(n: int, x: int, y: int) -> int:  # Wikipedia's xy2d
        d, s = 0, n // 2
        while s > 0:
            rx, ry = int(x & s > 0), int(y & s > 0)
            d += s * s * ((3 * rx) ^ ry)
            if ry == 0:
                if rx == 1:
                    x, y = n - 1 - x, n - 1 - y
                x, y = y, x
            s //= 2
        return d

    n = 1 << order
    rng = np.random.default_rng(order)
    x, y = rng.integers(0, n, 300), rng.integers(0, n, 300)
    keys = synthetic.hilbert_key(x.astype(float), y.astype(float), (0, 0, n - 1, n - 1), order)
    assert keys.tolist() == [reference(n, int(a), int(b)) for a, b in zip(x, y, strict=True)]


@pytest.mark.parametrize("order", [0, 32])
def test_hilbert_key_rejects_bad_order(order):
    with pytest.raises(ValueError, match="order must be in 1..31"):
        synthetic.hilbert_key(np.zeros(1), np.zeros(1), (0, 0, 1, 1), order)


@pytest.mark.parametrize(("total", "seed"), [(0, 0), (1, 1), (493, 2), (494, 3), (123_457, 42)])
def test_allocate_counts_sums_exactly(total, seed):
    counts = synthetic.allocate_counts(synthetic.zip_cells(), total, seed)
    assert counts.sum() == total and (counts >= 0).all()


@pytest.mark.parametrize(
    ("total", "seed", "message"),
    [(-1, 0, "total must be >= 0"), (10, -1, "seed must be >= 0")],
)
def test_allocate_counts_rejects_bad_arguments(total, seed, message):
    with pytest.raises(ValueError, match=message):
        synthetic.allocate_counts(synthetic.zip_cells(), total, seed)


def test_small_cells_are_denser():
    cells = synthetic.zip_cells()
    counts = synthetic.allocate_counts(cells, 2_000_000, 42)
    area = np.array([c.area_km2 for c in cells])
    density = counts / area
    small, large = area < np.quantile(area, 0.2), area > np.quantile(area, 0.8)
    assert np.median(density[small]) > 3 * np.median(density[large])
    assert density.max() < 5000  # buildings per km²: dense, not absurd


def _concat(batches):
    return synthetic.BuildingBatch.concat(list(batches))


def test_iter_buildings_does_not_depend_on_batch_size():
    whole = _concat(synthetic.iter_buildings(1000, 5, batch_size=10**6))
    for size in (7, 333):
        batches = list(synthetic.iter_buildings(1000, 5, batch_size=size))
        assert [len(b) for b in batches[:-1]] == [size] * (len(batches) - 1)
        parts = _concat(batches)
        for name in synthetic.BuildingBatch.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))
    assert whole.number.tolist() == list(range(1, 1001))


def test_same_seed_same_buildings_other_seed_other_buildings():
    a = _concat(synthetic.iter_buildings(1000, 11))
    b = _concat(synthetic.iter_buildings(1000, 11))
    c = _concat(synthetic.iter_buildings(1000, 12))
    assert a.coords.tobytes() == b.coords.tobytes()
    assert a.footprint_m2.tobytes() == b.footprint_m2.tobytes()
    assert a.coords.shape == c.coords.shape and not np.array_equal(a.coords, c.coords)


def test_buildings_are_plausible_rectangles():
    batch = _concat(synthetic.iter_buildings(5000, 3))
    polygons = shapely.polygons(batch.coords)
    assert shapely.is_valid(polygons).all()
    lo, hi = synthetic.FOOTPRINT_RANGE_M2
    assert lo <= batch.footprint_m2.min() and batch.footprint_m2.max() <= hi
    assert 80 < np.median(batch.footprint_m2) < 250  # mostly houses
    # footprint_m2 is the area in an equal-area projection
    to_laea = pyproj.Transformer.from_crs("EPSG:4326", LAEA_MA, always_xy=True)
    projected = shapely.transform(polygons, lambda c: np.column_stack(to_laea.transform(*c.T)))
    np.testing.assert_allclose(shapely.area(projected), batch.footprint_m2, rtol=1e-5)
    # right angles: in a conformal projection the two diagonals have the same length
    to_lcc = pyproj.Transformer.from_crs("EPSG:4326", LCC_MA, always_xy=True)
    conformal = shapely.transform(polygons, lambda c: np.column_stack(to_lcc.transform(*c.T)))
    ring = shapely.get_coordinates(conformal).reshape(-1, 5, 2)
    d1 = np.linalg.norm(ring[:, 2] - ring[:, 0], axis=1)
    d2 = np.linalg.norm(ring[:, 3] - ring[:, 1], axis=1)
    np.testing.assert_allclose(d1, d2, rtol=1e-5)
    nulls = np.isnan(batch.height_m).mean(), (batch.year_built == 0).mean()
    assert 0.05 < nulls[0] < 0.25 and 0.05 < nulls[1] < 0.3
    assert set(np.unique(batch.use_type)) == set(range(len(synthetic.USE_TYPES)))


def test_use_types_are_the_models_choices():
    assert list(synthetic.USE_TYPES) == list(Building.UseType.values)


# --------------------------------------------------------------------------- encodings


def _rings(n: int, seed: int = 0) -> np.ndarray:
    return _concat(synthetic.iter_buildings(n, seed)).coords


@requires_spatialite
@pytest.mark.django_db
def test_spatialite_blobs_equal_what_spatialite_stores_from_wkb():
    coords = _rings(200)
    blobs = bulkload.spatialite_polygon_blobs(coords, 4326)
    wkb = shapely.to_wkb(shapely.polygons(coords)).tolist()
    with connection.cursor() as cursor:
        stored = [
            bytes(cursor.execute("SELECT GeomFromWKB(%s, 4326)", [w]).fetchone()[0]) for w in wkb
        ]
    assert {len(b) for b in blobs} == {132}
    assert blobs == stored


@pytest.mark.parametrize(
    ("shape", "message"),
    [((3, 5), "shape"), ((3, 3, 2), "shape"), ((2, 5, 3), "shape")],
)
def test_spatialite_blobs_reject_bad_coords(shape, message):
    with pytest.raises(ValueError, match=message):
        bulkload.spatialite_polygon_blobs(np.zeros(shape), 4326)


def test_spatialite_blobs_reject_open_rings():
    ring = np.array([[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0.5]]], dtype=float)
    with pytest.raises(ValueError, match="closed"):
        bulkload.spatialite_polygon_blobs(ring, 4326)


def test_ewkb_hex_round_trips_through_shapely():
    coords = _rings(50)
    hexes = bulkload.ewkb_hex(coords, 4326)
    back = shapely.from_wkb(hexes)
    assert (shapely.get_srid(back) == 4326).all()
    np.testing.assert_array_equal(shapely.get_coordinates(back).reshape(coords.shape), coords)


def test_rtree_boxes_round_like_sqlite():
    """The float32 boxes equal what SQLite's rtree stores when given the doubles."""
    coords = np.concatenate([_rings(500), -_rings(500, 1), _rings(10, 2) * 1e-3])
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE r USING rtree(id, xmin, xmax, ymin, ymax)")
    x, y = coords[:, :, 0], coords[:, :, 1]
    db.executemany(
        "INSERT INTO r VALUES (?, ?, ?, ?, ?)",
        zip(
            range(len(coords)),
            x.min(1).tolist(),
            x.max(1).tolist(),
            y.min(1).tolist(),
            y.max(1).tolist(),
            strict=True,
        ),
    )
    stored = np.array(db.execute("SELECT xmin, xmax, ymin, ymax FROM r ORDER BY id").fetchall())
    np.testing.assert_array_equal(bulkload.rtree_boxes(coords).astype(np.float64), stored)


@pytest.mark.parametrize("entries", [0, 1, 50, 51, 52, 51 * 51, 51 * 51 + 1, 9000])
def test_packed_rtree_passes_rtreecheck_and_answers_queries(entries):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE r USING rtree(id, xmin, xmax, ymin, ymax)")
    coords = _rings(max(entries, 1), 4)[:entries]
    ids = np.arange(10, 10 + entries, dtype=np.int64) * 3
    writer = bulkload.PackedRTreeWriter(db.cursor(), "r", lambda name: f'"{name}"')
    assert writer.capacity == 51  # SQLite's RTREE_MAXCELLS for 2-D trees on 4 KiB pages
    boxes = bulkload.rtree_boxes(coords)
    for start in range(0, entries, 1000):  # several add() calls, like batches
        writer.add(ids[start : start + 1000], boxes[start : start + 1000])
    depth = writer.finish()
    assert depth == (0 if entries <= 51 else 1 if entries <= 51 * 51 else 2)
    assert db.execute("SELECT rtreecheck('r')").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM r").fetchone() == (entries,)
    # window queries through the tree equal a brute-force test of the same boxes
    rng = np.random.default_rng(entries)
    for _ in range(5):
        if entries == 0:
            break
        cx, cy = coords[rng.integers(entries), 0]
        window = (cx - 0.01, cx + 0.01, cy - 0.01, cy + 0.01)
        got = {
            r[0]
            for r in db.execute(
                "SELECT id FROM r WHERE xmax >= ? AND xmin <= ? AND ymax >= ? AND ymin <= ?",
                (window[0], window[1], window[2], window[3]),
            )
        }
        hit = (
            (boxes[:, 1] >= window[0])
            & (boxes[:, 0] <= window[1])
            & (boxes[:, 3] >= window[2])
            & (boxes[:, 2] <= window[3])
        )
        assert got == set(ids[hit].tolist()) and got
    # the rtree module keeps working on the packed tree: insert and delete
    db.execute("INSERT INTO r VALUES (1, 0, 1, 0, 1)")
    db.execute("DELETE FROM r WHERE id IN (SELECT id FROM r ORDER BY id DESC LIMIT 40)")
    assert db.execute("SELECT rtreecheck('r')").fetchone() == ("ok",)


def test_packed_rtree_needs_an_empty_tree():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE r USING rtree(id, xmin, xmax, ymin, ymax)")
    db.execute("INSERT INTO r VALUES (1, 0, 1, 0, 1)")
    with pytest.raises(ValueError, match="must exist and be empty"):
        bulkload.PackedRTreeWriter(db.cursor(), "r", lambda name: f'"{name}"')


# --------------------------------------------------------------------------- the command


@pytest.fixture
def generated(db):
    """A generated Massachusetts of N buildings in the test transaction."""
    out = generate()
    return out


@pytest.mark.django_db
def test_counts_and_zip_boundaries(generated):
    assert f"{N:,} buildings in 494 ZIP codes" in generated and "rows/s" in generated
    assert Building.objects.count() == N
    assert ZipCode.objects.filter(state="MA").count() == 494
    _, zips = zip_frame()
    assert set(shapely.get_type_id(zips)) == {6}  # MultiPolygon
    assert shapely.is_valid(zips).all()
    # stored exactly as generated (no precision lost on the way)
    cells = synthetic.zip_cells()
    assert shapely.to_wkb(zips).tolist() == [shapely.to_wkb(c.boundary) for c in cells]
    assert sorted(ZipCode.objects.values_list("code", flat=True)) == [
        c.code for c in synthetic.zip_cells()
    ]
    assert list(Building.objects.order_by("id").values_list("source_id", flat=True)[:3]) == [
        "syn-1",
        "syn-2",
        "syn-3",
    ]
    ids = list(Building.objects.order_by("id").values_list("id", flat=True))
    assert ids == list(range(1, N + 1))


@pytest.mark.django_db
def test_values_are_plausible_and_sometimes_null(generated):
    _, geoms, footprint, _ = building_frame()
    lo, hi = synthetic.FOOTPRINT_RANGE_M2
    assert lo <= footprint.min() and footprint.max() <= hi
    to_laea = pyproj.Transformer.from_crs("EPSG:4326", LAEA_MA, always_xy=True)
    projected = shapely.transform(geoms, lambda c: np.column_stack(to_laea.transform(*c.T)))
    np.testing.assert_allclose(shapely.area(projected), footprint, rtol=1e-5)
    assert 0 < Building.objects.filter(height_m__isnull=True).count() < N / 4
    assert 0 < Building.objects.filter(year_built__isnull=True).count() < N / 3
    years = Building.objects.filter(year_built__isnull=False).values_list("year_built", flat=True)
    assert min(years) >= 1700 and max(years) <= 2024
    assert set(Building.objects.values_list("use_type", flat=True)) == set(Building.UseType.values)


@pytest.mark.django_db
def test_zip_holds_the_centroid_and_some_buildings_straddle(generated):
    ids, geoms, _, zip_ids = building_frame()
    zip_pks, zips = zip_frame()
    own = zips[np.searchsorted(zip_pks, zip_ids)]
    assert shapely.contains(own, shapely.centroid(geoms)).all()
    within_own = shapely.within(geoms, own)
    assert within_own.mean() > 0.95
    inside_any = np.zeros(len(geoms), bool)
    inside_any[shapely.STRtree(zips).query(geoms, predicate="within")[0]] = True
    assert (inside_any == within_own).all()
    assert (~inside_any).sum() >= 3  # straddling a border or the coast
    # Django's spatial lookup agrees with shapely, ZIP by ZIP (the busiest ten)
    busiest = np.argsort(-np.bincount(np.searchsorted(zip_pks, zip_ids)))[:10]
    for k in busiest:
        expected = set(ids[shapely.within(geoms, zips[k])].tolist())
        boundary = ZipCode.objects.get(pk=zip_pks[k]).boundary
        got = set(Building.objects.filter(boundary__within=boundary).values_list("id", flat=True))
        assert got == expected and got


@pytest.mark.django_db
def test_spatial_index_is_complete_after_the_load(generated):
    ids, geoms, _, _ = building_frame()
    if IS_SPATIALITE:
        assert rtree_state() == ("ok", N, N)
        with connection.cursor() as cursor:
            # (SpatiaLite's CheckSpatialIndex() is no help: it still says 1 with entries
            # missing.) Every row has an entry whose box holds the geometry's MBR:
            cursor.execute(
                f"SELECT count(*) FROM buildings_building b JOIN {IDX} i ON i.pkid = b.id "
                "WHERE i.xmin <= MbrMinX(b.boundary) AND i.xmax >= MbrMaxX(b.boundary) "
                "AND i.ymin <= MbrMinY(b.boundary) AND i.ymax >= MbrMaxY(b.boundary)"
            )
            assert cursor.fetchone()[0] == N
        assert triggers() == {
            f"{p}_buildings_building_boundary"
            for p in ("ggi", "ggu", "gii", "giu", "gid", "tmi", "tmu", "tmd")
        }
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'buildings_building' "
                "AND indexdef ILIKE '%%USING gist%%'"
            )
            assert len(cursor.fetchall()) == 1
    # bounding-box queries through the index equal shapely's answer
    xmin, ymin, xmax, ymax = shapely.total_bounds(geoms)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = rng.uniform(xmin, xmax), rng.uniform(ymin, ymax)
        window = shapely.box(x - 0.1, y - 0.1, x + 0.1, y + 0.1)
        expected = set(ids[shapely.intersects(geoms, window)].tolist())
        if IS_SPATIALITE:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM buildings_building WHERE Intersects(boundary, "
                    "BuildMbr(%s, %s, %s, %s, 4326)) AND id IN (SELECT ROWID FROM SpatialIndex "
                    "WHERE f_table_name = 'buildings_building' AND search_frame = "
                    "BuildMbr(%s, %s, %s, %s, 4326))",
                    [*window.bounds, *window.bounds],
                )
                got = {r[0] for r in cursor.fetchall()}
        else:
            from django.contrib.gis.geos import GEOSGeometry

            frame = GEOSGeometry(window.wkt, srid=4326)
            hits = Building.objects.filter(boundary__intersects=frame)
            got = set(hits.values_list("id", flat=True))
        assert got == expected


@requires_spatialite
@pytest.mark.django_db
def test_new_rows_after_the_load_go_through_the_restored_triggers(generated):
    extra = Building.objects.create(boundary=small_square(), footprint_m2=90.0)
    assert rtree_state() == ("ok", N + 1, N + 1)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {IDX} WHERE pkid = %s", [extra.pk])
        assert cursor.fetchone()[0] == 1
    extra.delete()
    assert rtree_state() == ("ok", N, N)


@pytest.mark.django_db
def test_same_seed_same_bytes_regardless_of_batch_size_other_seed_differs():
    generate(buildings=2000)
    first = stored_rows()
    generate(buildings=2000, replace=True, batch_size=333)
    assert stored_rows() == first
    generate(buildings=2000, replace=True, seed=SEED + 1)
    other = stored_rows()
    assert len(other) == len(first) and other != first
    # the ZIP codes do not depend on the seed
    assert other[2000:] == first[2000:]


@requires_spatialite
@pytest.mark.django_db
def test_packed_index_equals_the_one_createspatialindex_builds():
    def index_rows():
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pkid, xmin, xmax, ymin, ymax FROM {IDX} ORDER BY pkid")
            return cursor.fetchall()

    generate(buildings=2000, method="rebuild")
    rebuilt, data = index_rows(), stored_rows()
    assert rtree_state() == ("ok", 2000, 2000)
    generate(buildings=2000, method="packed", replace=True)
    assert stored_rows() == data
    assert index_rows() == rebuilt
    generate(buildings=500, method="naive", replace=True)
    assert rtree_state() == ("ok", 500, 500)


@pytest.mark.django_db
def test_flags_if_missing_and_existing_data():
    assert "500 buildings" in generate(buildings=500, if_missing=True)  # empty: generates
    before = stored_rows()
    out = generate(buildings=900, if_missing=True)
    assert "already holds 500 buildings; nothing to do (--if-missing)" in out
    assert out.count("\n") == 1 and stored_rows() == before
    expected = "already holds 500 buildings and 494 ZIP codes.*--replace"
    with pytest.raises(CommandError, match=expected):
        generate(buildings=900)
    assert stored_rows() == before
    generate(buildings=900, replace=True)
    assert Building.objects.count() == 900 and ZipCode.objects.count() == 494


@pytest.mark.django_db
def test_zero_buildings_still_makes_the_zip_codes():
    generate(buildings=0)
    assert Building.objects.count() == 0 and ZipCode.objects.count() == 494


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"buildings": -1}, "--buildings must be >= 0, got -1"),
        ({"seed": -5}, "--seed must be >= 0, got -5"),
        ({"batch_size": 0}, "--batch-size must be > 0, got 0"),
        ({"method": "fast"}, "--method must be one of packed, rebuild, naive, got 'fast'"),
        ({"replace": True, "if_missing": True}, "--replace and --if-missing exclude each other"),
    ],
)
@pytest.mark.django_db
def test_bad_arguments_are_command_errors(options, message):
    with pytest.raises(CommandError, match=message):
        generate(**options)
    assert Building.objects.count() == 0 and ZipCode.objects.count() == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--buildings", "many"], "argument --buildings: invalid int value: 'many'"),
        (["--method", "fast"], "argument --method: invalid choice: 'fast'"),
        (["--replace", "--if-missing"], "argument --if-missing: not allowed with argument"),
    ],
)
def test_bad_arguments_on_the_command_line_name_the_argument(argv, message):
    from project.buildings.management.commands.generate_massachusetts import Command

    parser = Command().create_parser("manage.py", "generate_massachusetts")
    with pytest.raises(CommandError, match=message):
        parser.parse_args(argv)


def _fail_on_second_batch(monkeypatch):
    real = bulkload.insert_batch
    calls = []

    def failing(loader, prepared):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("injected failure in batch 2")
        return real(loader, prepared)

    monkeypatch.setattr(bulkload, "insert_batch", failing)
    return calls


def _check_failed_replace_left_old_data(monkeypatch):
    generate(buildings=1200, seed=1)
    before = stored_rows()
    index_before = rtree_state() if IS_SPATIALITE else None
    triggers_before = triggers() if IS_SPATIALITE else None
    calls = _fail_on_second_batch(monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure in batch 2"):
        generate(buildings=1500, seed=2, replace=True, batch_size=400)
    assert len(calls) == 2
    assert stored_rows() == before  # old rows intact, no new ones
    if IS_SPATIALITE:
        assert rtree_state() == index_before == ("ok", 1200, 1200)
        assert triggers() == triggers_before
    monkeypatch.undo()
    # and the database still takes a full load afterwards
    generate(buildings=1500, seed=2, replace=True, batch_size=400)
    assert Building.objects.count() == 1500


@pytest.mark.django_db
def test_failure_midway_inside_the_test_transaction_changes_nothing(monkeypatch):
    _check_failed_replace_left_old_data(monkeypatch)


@pytest.mark.django_db(transaction=True)
def test_failure_midway_with_real_commits_changes_nothing(monkeypatch):
    assert not transaction.get_connection().in_atomic_block
    _check_failed_replace_left_old_data(monkeypatch)
    bulkload.delete_all()


@pytest.mark.django_db
def test_failure_on_the_first_load_leaves_empty_tables(monkeypatch):
    _fail_on_second_batch(monkeypatch)
    with pytest.raises(RuntimeError, match="injected failure"):
        generate(buildings=1000, batch_size=300)
    assert Building.objects.count() == 0 and ZipCode.objects.count() == 0


@pytest.mark.django_db
def test_load_buildings_refuses_a_non_empty_table(generated):
    with pytest.raises(ValueError, match="is not empty"):
        bulkload.load_buildings(synthetic.iter_buildings(10, 1), range(1, 495))
    expected = "`method` must be one of 'packed', 'rebuild', 'naive'; got 'quick'"
    with pytest.raises(ValueError, match=expected):
        bulkload.load_buildings([], [], method="quick")  # type: ignore[arg-type]


@pytest.mark.django_db
def test_memory_is_bounded_by_the_batch_not_the_table():
    """tracemalloc peak of a load in small batches is a fraction of the same load in one batch."""
    import tracemalloc

    cells = synthetic.zip_cells()
    ZipCode.objects.bulk_create(
        ZipCode(id=c.index + 1, code=c.code, state="MA", boundary=c.boundary.wkt) for c in cells
    )
    peaks = {}
    for batch_size in (6_000, 300):
        tracemalloc.start()
        with transaction.atomic():
            bulkload.load_buildings(synthetic.iter_buildings(6_000, 1, batch_size), range(1, 495))
            transaction.set_rollback(True)
        peaks[batch_size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[300] < peaks[6_000] / 4, peaks


@pytest.mark.skipif(not IS_POSTGIS, reason="PostGIS only: sequences")
@pytest.mark.django_db
def test_postgis_sequences_continue_after_explicit_ids(generated):
    extra = Building.objects.create(boundary=small_square(), footprint_m2=90.0)
    assert extra.pk == N + 1


# --------------------------------------------------------------------------- many regions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("RI", ("RI",)),
        ("ri", ("RI",)),
        ("RI,CT", ("CT", "RI")),
        (" ct , ri ", ("CT", "RI")),
        (["RI", "MA"], ("MA", "RI")),
        (("DC",), ("DC",)),
    ],
)
def test_parse_states_valid(value, expected):
    assert synthetic.parse_states(value) == expected


def test_parse_states_all_is_every_state_of_the_zipcodes_package():
    import zipcodes

    states = synthetic.parse_states("ALL")
    assert states == synthetic.parse_states("all") == synthetic.available_states()
    assert list(states) == sorted(states) and {"MA", "RI", "TX", "AK", "HI", "DC", "PR"} <= set(
        states
    )
    standard = {r["state"] for r in zipcodes.list_all() if r["zip_code_type"] == "STANDARD"}
    assert set(states) <= standard


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("XX", ValueError, r"^`states` must be codes of states with ZIP codes .*'ALL'; got 'XX'$"),
        ("RI,XX", ValueError, r"^`states` must be codes of states .*; got 'XX'$"),
        ("RI,ri", ValueError, r"^`states` must be distinct state codes; got 'RI'$"),
        ("", ValueError, r"^`states` must be state codes .*, without empty entries; got ''$"),
        ("RI,", ValueError, r"^`states` must be state codes .*, without empty entries; got 'RI,'$"),
        ([], ValueError, r"^`states` must be state codes .*, without empty entries; got \[\]$"),
        ("ALL,RI", ValueError, r"^`states` must be either 'ALL' alone or state codes; got"),
        (42, TypeError, r"^`states` must be a str or a list of str .*; got 42 \(int\)$"),
        (["RI", 1], TypeError, r"^`states` must be a str or a list of str"),
    ],
)
def test_parse_states_invalid(value, error, message):
    with pytest.raises(error, match=message):
        synthetic.parse_states(value)


def test_several_states_tile_without_overlap_and_keep_their_own_state():
    cells = synthetic.region_cells(("CT", "MA", "RI"))
    alone = {s: synthetic.region_cells((s,)) for s in ("CT", "MA", "RI")}
    assert [c.code for c in cells] == sorted(c.code for s in alone.values() for c in s)
    assert [c.index for c in cells] == list(range(len(cells)))
    by_code = {c.code: c for s in alone.values() for c in s}
    assert all(by_code[c.code].state == c.state for c in cells)
    geoms = np.array([c.boundary for c in cells])
    assert shapely.is_valid(geoms).all()
    assert shapely.contains_xy(geoms, [c.lon for c in cells], [c.lat for c in cells]).all()
    # one Voronoi diagram for all: neighbours across a state line meet, they do not overlap
    # (clipping to two outlines leaves slivers of rounding error, far below any building)
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    pairs = left < right
    shared = shapely.area(shapely.intersection(geoms[left[pairs]], geoms[right[pairs]]))
    assert shared.max() < 1e-12  # degrees², about 1e-2 m²
    crossing = np.array(
        [cells[a].state != cells[b].state for a, b in zip(left, right, strict=True)]
    )
    assert crossing[pairs].any()  # the states do border each other
    # a cell is nearly the one of the one-state run (the shared plane's scale differs a
    # little); only cells along a state line give up much of their area to a neighbour
    one = np.array([by_code[c.code].boundary for c in cells])
    iou = shapely.area(shapely.intersection(geoms, one)) / shapely.area(shapely.union(geoms, one))
    assert np.median(iou) > 0.99 and (iou < 0.9).any()


def test_duplicate_centroids_get_their_own_cells():
    # two STANDARD codes in Texas share one centroid in the zipcodes package
    import collections

    import zipcodes

    tx = [r for r in zipcodes.filter_by(state="TX", zip_code_type="STANDARD") if r.get("lat")]
    repeated = [
        k for k, n in collections.Counter((r["lat"], r["long"]) for r in tx).items() if n > 1
    ]
    assert repeated, "the zipcodes package no longer has a repeated centroid in Texas"
    cells = synthetic.region_cells(("TX",))
    assert len(cells) == len(tx)
    points = {(c.lon, c.lat) for c in cells}
    assert len(points) == len(cells)
    for lat, lon in repeated:
        near = [
            c for c in cells if abs(c.lat - float(lat)) < 0.01 and abs(c.lon - float(lon)) < 0.01
        ]
        assert sum((c.lon, c.lat) == (float(lon), float(lat)) for c in near) == 1


@pytest.mark.parametrize("states", ["RI", "CT,RI"])
def test_many_region_buildings_are_deterministic(states):
    whole = _concat(synthetic.iter_buildings(3000, 5, batch_size=10**6, states=states))
    again = _concat(synthetic.iter_buildings(3000, 5, batch_size=777, states=states))
    other = _concat(synthetic.iter_buildings(3000, 6, states=states))
    for name in whole.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(whole, name), getattr(again, name))
    assert not np.array_equal(whole.coords, other.coords)
    cells = synthetic.region_cells(synthetic.parse_states(states))
    assert set(whole.zip_index.tolist()) <= set(range(len(cells)))
    own = np.array([cells[i].boundary for i in whole.zip_index])
    centres = whole.coords[:, :4].mean(axis=1)
    assert shapely.contains_xy(own, centres[:, 0], centres[:, 1]).all()


def generate_states(states: str, **options) -> str:
    out = io.StringIO()
    options.setdefault("buildings", 2000)
    options.setdefault("seed", SEED)
    call_command("generate_buildings", states=states, no_progress=True, stdout=out, **options)
    return out.getvalue()


@pytest.mark.django_db
def test_a_small_state_end_to_end(tmp_path):
    from project.buildings.analysis import summarize_by_zip

    out = generate_states("RI")
    assert "generate_buildings: 2,000 buildings in 73 ZIP codes of RI (seed 7," in out
    assert set(ZipCode.objects.values_list("state", flat=True)) == {"RI"}
    cells = synthetic.region_cells(("RI",))
    assert sorted(ZipCode.objects.values_list("code", flat=True)) == [c.code for c in cells]
    first = stored_rows()
    generate_states("RI", replace=True, batch_size=333)
    assert stored_rows() == first
    # the building layer's analysis finds the state and puts buildings in its ZIP codes
    summary = summarize_by_zip("RI")
    assert len(summary) == 73
    assert 0.95 * 2000 < summary["n_buildings"].sum() <= 2000
    line = io.StringIO()
    call_command(
        "analyze_buildings",
        "--state",
        "RI",
        "--out",
        str(tmp_path / "ri.csv"),
        "--no-progress",
        stdout=line,
        stderr=io.StringIO(),
    )
    assert line.getvalue().startswith("RI: 73 ZIPs, ")


@pytest.mark.django_db
def test_several_states_in_one_database():
    import zipcodes

    expected = {
        state: sum(
            1
            for r in zipcodes.filter_by(state=state, zip_code_type="STANDARD")
            if r.get("lat") and r.get("long")
        )
        for state in ("CT", "RI")
    }
    out = generate_states("CT,RI", buildings=1000)
    assert f"in {sum(expected.values())} ZIP codes of CT, RI" in out
    per_state = dict(
        ZipCode.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n")
    )
    assert per_state == expected
    # the buildings of each ZIP code lie in it (their FK says so; the geometry agrees)
    ids, geoms, _, zip_ids = building_frame()
    zip_pks, zips = zip_frame()
    own = zips[np.searchsorted(zip_pks, zip_ids)]
    assert shapely.contains(own, shapely.centroid(geoms)).all()


@pytest.mark.django_db
def test_if_missing_fails_when_the_database_holds_other_states():
    generate_states("RI", buildings=300)
    with pytest.raises(
        CommandError,
        match=r"holds 300 buildings in RI but none in CT: pass --replace to generate",
    ):
        generate_states("CT,RI", if_missing=True)
    assert "nothing to do (--if-missing)" in generate_states("RI", if_missing=True)
    with pytest.raises(CommandError, match=r"holds 300 buildings in RI but none in MA"):
        generate(if_missing=True)  # generate_massachusetts: the MA default


@pytest.mark.parametrize(
    ("states", "message"),
    [
        ("XX", r"^`--states` must be codes of states with ZIP codes .*; got 'XX'$"),
        ("ALL,RI", r"^`--states` must be either 'ALL' alone or state codes; got 'ALL,RI'$"),
        ("RI,RI", r"^`--states` must be distinct state codes; got 'RI'$"),
        ("", r"^`--states` must be state codes .*, without empty entries; got ''$"),
    ],
)
@pytest.mark.django_db
def test_bad_states_are_command_errors(states, message):
    with pytest.raises(CommandError, match=message):
        generate_states(states)
    assert Building.objects.count() == 0 and ZipCode.objects.count() == 0


def test_generate_massachusetts_has_no_states_option():
    from project.buildings.management.commands.generate_massachusetts import Command

    parser = Command().create_parser("manage.py", "generate_massachusetts")
    with pytest.raises(CommandError, match="unrecognized arguments: --states RI"):
        parser.parse_args(["--states", "RI"])
    assert Command.command_name == "generate_massachusetts"


@pytest.mark.slow
def test_all_states_make_valid_cells_in_bounded_memory():
    import tracemalloc

    synthetic.region_cells.cache_clear()
    tracemalloc.start()
    try:
        cells = synthetic.region_cells(synthetic.parse_states("ALL"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cells) == len(synthetic._standard_records()) > 29_000
    assert len({c.state for c in cells}) == len(synthetic.available_states())
    geoms = np.array([c.boundary for c in cells])
    assert shapely.is_valid(geoms).all() and not shapely.is_empty(geoms).any()
    assert shapely.contains_xy(geoms, [c.lon for c in cells], [c.lat for c in cells]).all()
    # the cells' own Python and GEOS-side memory stays a few KB per ZIP code
    assert peak / len(cells) < 20_000
