"""QuerySet -> DataFrame loaders: same rows, values and dtypes as the ORM, chunk by chunk."""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
from decimal import Decimal
from unittest import mock

import pandas as pd

# pyproj and shapely are imported here, at collection, before any SpatiaLite connection:
# SQLite dlopens mod_spatialite RTLD_GLOBAL, and extension modules loaded after it bind to the
# system GEOS/PROJ instead of their own (shapely's to_wkt then fails, pyproj can crash at exit).
import pyproj  # noqa: F401
import pytest
import shapely
from django.contrib.gis.db.models.functions import Centroid
from django.contrib.gis.geos import MultiPolygon, Polygon
from django.db import connection
from django.db.models import (
    BooleanField,
    Count,
    DateField,
    DateTimeField,
    DecimalField,
    ExpressionWrapper,
    F,
    Q,
    Value,
)
from django.db.models.functions import Cast
from django.db.models.sql.compiler import SQLCompiler

from analysis_lib import EngineUnavailable, iter_frames, read_frame, read_geodataframe
from project.buildings.models import Building, ZipCode
from tests.backends import IS_POSTGIS
from tests.heap_peak import heap_peak

# The dtype contract (docs/loaders.md), pinned on whichever pandas runs the tests: text is
# pandas' own text dtype (object on pandas 2, the str dtype on pandas 3); datetimes are ns on both.
PANDAS_3 = int(pd.__version__.split(".", 1)[0]) >= 3
TEXT = "str" if PANDAS_3 else "object"

PLAIN = ["id", "footprint_m2", "height_m", "year_built", "use_type", "source_id", "zip"]
PLAIN_DTYPES = {
    "id": "int64",
    "footprint_m2": "float64",
    "height_m": "float64",
    "year_built": "Int64",
    "use_type": "category",
    "source_id": TEXT,
    "zip": "Int64",
}
N_BUILDINGS = 240


def _norm(value):
    """None for every spelling of missing (None, NaN, pd.NA, NaT)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _column(df: pd.DataFrame, name: str) -> list:
    return [_norm(v) for v in df[name].astype(object).tolist()]


def assert_same_as_orm(df: pd.DataFrame, qs, fields: list[str]) -> None:
    expected = list(qs.values_list(*fields))
    assert list(df.columns) == fields
    assert len(df) == len(expected)
    for j, name in enumerate(fields):
        assert _column(df, name) == [_norm(row[j]) for row in expected], name


@pytest.fixture
def zips(make_zip):
    return [
        make_zip("01001", (0, 0, 1, 1), city="Agawam"),
        make_zip("01002", (1, 0, 2, 1), city="Amherst"),
        make_zip("01003", (0, 1, 1, 2), state="NH"),
    ]


@pytest.fixture
def buildings(zips):
    """N_BUILDINGS buildings with NULLs in every nullable column; one with a hole."""
    rng = random.Random(7)
    uses = list(Building.UseType.values)
    objs = []
    for i in range(N_BUILDINGS):
        x, y = rng.uniform(0, 1.9), rng.uniform(0, 1.9)
        if i == 0:
            shell = ((x, y), (x + 0.01, y), (x + 0.01, y + 0.01), (x, y + 0.01), (x, y))
            hole = (
                (x + 0.004, y + 0.004),
                (x + 0.006, y + 0.004),
                (x + 0.006, y + 0.006),
                (x + 0.004, y + 0.006),
                (x + 0.004, y + 0.004),
            )
            boundary = Polygon(shell, hole, srid=4326)
        else:
            boundary = Polygon.from_bbox((x, y, x + 0.001 * (1 + i % 5), y + 0.001))
            boundary.srid = 4326
        objs.append(
            Building(
                boundary=boundary,
                footprint_m2=round(rng.uniform(20, 2000), 3),
                height_m=None if i % 4 == 0 else round(rng.uniform(3, 60), 2),
                year_built=None if i % 3 == 0 else rng.randint(1750, 2024),
                use_type=uses[i % len(uses)],
                source_id=f"S{i:04d}" if i % 10 else "",
                zip=None if i % 7 == 0 else zips[i % 3],
            )
        )
    Building.objects.bulk_create(objs)
    return Building.objects.order_by("id")


# --- values and dtypes -----------------------------------------------------------------------


@pytest.mark.django_db
def test_plain_fields_match_values_list_with_field_dtypes(buildings):
    df = read_frame(buildings, PLAIN)

    assert_same_as_orm(df, buildings, PLAIN)
    assert df.dtypes.astype(str).to_dict() == PLAIN_DTYPES
    assert df["height_m"].isna().sum() == N_BUILDINGS // 4
    assert df["year_built"].isna().sum() == N_BUILDINGS // 3
    assert list(df["use_type"].cat.categories) == list(Building.UseType.values)
    assert isinstance(df.index, pd.RangeIndex) and df.index[0] == 0


@pytest.mark.django_db
def test_fields_none_gives_what_values_gives(buildings):
    df = read_frame(buildings)

    expected_names = list(Building.objects.values().first())
    assert list(df.columns) == expected_names
    assert "zip_id" in df.columns and df["zip_id"].dtype == "Int64"
    assert all(isinstance(g, shapely.Polygon) for g in df["boundary"])
    assert_same_as_orm(
        df.drop(columns="boundary"), buildings, [n for n in expected_names if n != "boundary"]
    )


@pytest.mark.django_db
def test_fk_by_name_and_by_attname_give_the_id(buildings):
    df = read_frame(buildings, ["zip", "zip_id", "zip__id"])

    assert df["zip"].equals(df["zip_id"]) and df["zip"].equals(df["zip__id"])
    assert df.dtypes.astype(str).tolist() == ["Int64"] * 3
    assert_same_as_orm(df, buildings, ["zip", "zip_id", "zip__id"])


@pytest.mark.django_db
def test_related_lookups_and_annotations(buildings):
    qs = buildings.annotate(
        double_height=F("height_m") * 2,
        zip_buildings=Count("zip__buildings"),
    )
    fields = ["id", "zip__code", "zip__state", "double_height", "zip_buildings"]

    df = read_frame(qs, fields)

    assert_same_as_orm(df, qs, fields)
    assert df.dtypes.astype(str).tolist() == ["int64", TEXT, TEXT, "float64", "Int64"]


@pytest.mark.django_db
def test_reverse_relation_is_a_nullable_id(buildings, make_zip):
    make_zip("09999", (5, 5, 6, 6))  # a ZIP with no buildings: LEFT JOIN gives NULL
    qs = ZipCode.objects.order_by("code", "buildings__id")

    df = read_frame(qs, ["code", "buildings__id"])

    assert_same_as_orm(df, qs, ["code", "buildings__id"])
    assert df["buildings__id"].dtype == "Int64" and df["buildings__id"].isna().sum() == 1


@pytest.mark.django_db
def test_ordering_is_kept(buildings):
    qs = Building.objects.order_by("-footprint_m2", "id")

    ids = pd.concat(iter_frames(qs, ["id"], chunk_size=17))["id"].tolist()

    assert ids == list(qs.values_list("id", flat=True))


@pytest.mark.django_db
def test_filters_and_slices(buildings):
    qs = buildings.filter(zip__city="Agawam", height_m__gt=10)[5:40]

    df = read_frame(qs, ["id", "height_m", "zip__city"])

    assert_same_as_orm(df, qs, ["id", "height_m", "zip__city"])
    assert 0 < len(df) <= 35


@pytest.mark.django_db
def test_database_params_stay_params(buildings):
    evil = "x'); DROP TABLE buildings_building; --"
    Building.objects.filter(id=buildings.first().id).update(source_id=evil)

    df = read_frame(Building.objects.filter(source_id=evil), ["id", "source_id"])

    assert df["source_id"].tolist() == [evil]
    assert Building.objects.count() == N_BUILDINGS


@pytest.mark.django_db
def test_datetime_date_bool_and_decimal_columns(buildings):
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    qs = buildings.annotate(
        seen=Value(when, output_field=DateTimeField()),
        day=Value(dt.date(2023, 2, 1), output_field=DateField()),
        tall=ExpressionWrapper(Q(height_m__gt=30), output_field=BooleanField()),
        area=Cast("footprint_m2", DecimalField(max_digits=12, decimal_places=3)),
    )

    df = read_frame(qs, ["id", "seen", "day", "tall", "area"])

    assert str(df["seen"].dtype) == "datetime64[ns, UTC]"
    assert (df["seen"] == pd.Timestamp(when)).all()
    assert str(df["day"].dtype) == "datetime64[ns]"
    assert (df["day"] == pd.Timestamp("2023-02-01")).all()
    assert str(df["tall"].dtype) == "boolean"
    expected = list(qs.values_list("tall", "area"))
    assert _column(df, "tall") == [_norm(t) for t, _ in expected]
    assert df["area"].dtype == object and isinstance(df["area"].iloc[0], Decimal)
    assert df["area"].tolist() == [a for _, a in expected]


# --- chunks ----------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("chunk_size", [1, 7, N_BUILDINGS, N_BUILDINGS + 1, 10 * N_BUILDINGS])
def test_chunk_boundaries(buildings, chunk_size):
    chunks = list(iter_frames(buildings, PLAIN, chunk_size=chunk_size))

    assert len(chunks) == math.ceil(N_BUILDINGS / chunk_size)
    assert all(len(c) <= chunk_size for c in chunks)
    assert all(c.dtypes.astype(str).to_dict() == PLAIN_DTYPES for c in chunks)
    whole = pd.concat(chunks)
    assert whole.index.tolist() == list(range(N_BUILDINGS))  # row numbers continue
    assert whole.dtypes.astype(str).to_dict() == PLAIN_DTYPES  # categories equal: concat keeps
    assert_same_as_orm(whole, buildings, PLAIN)


@pytest.mark.django_db
def test_read_frame_equals_concatenated_chunks(buildings):
    chunked = pd.concat(iter_frames(buildings, PLAIN, chunk_size=50), ignore_index=True)

    pd.testing.assert_frame_equal(read_frame(buildings, PLAIN, chunk_size=50), chunked)
    pd.testing.assert_frame_equal(read_frame(buildings, PLAIN, chunk_size=1000), chunked)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_qs",
    [
        lambda: Building.objects.none(),
        lambda: Building.objects.filter(id__in=[]),
        lambda: Building.objects.filter(footprint_m2__lt=0),
    ],
    ids=["none", "empty-in", "no-match"],
)
def test_empty_queryset_gives_right_columns_and_dtypes(buildings, make_qs):
    fields = [*PLAIN, "boundary", "zip__code"]

    chunks = list(iter_frames(make_qs(), fields))
    df = read_frame(make_qs(), fields, index="id")

    assert len(chunks) == 1 and len(chunks[0]) == 0
    assert list(chunks[0].columns) == fields
    full = read_frame(buildings, fields)
    assert chunks[0].dtypes.equals(full.dtypes)
    assert len(df) == 0 and df.index.name == "id" and list(df.columns) == fields[1:]


@pytest.mark.django_db
def test_rows_are_fetched_in_chunks_from_a_chunked_cursor(buildings):
    real = connection.chunked_cursor
    cursors = []

    def spy():
        cursor = real()
        cursor.fetchmany = mock.Mock(wraps=cursor.fetchmany)
        cursor.close = mock.Mock(wraps=cursor.close)
        cursors.append(cursor)
        return cursor

    with mock.patch.object(connection, "chunked_cursor", side_effect=spy):
        n = sum(len(c) for c in iter_frames(buildings, ["id"], chunk_size=100))

    assert n == N_BUILDINGS and len(cursors) == 1
    assert [c.args for c in cursors[0].fetchmany.call_args_list] == [(100,)] * 4
    cursors[0].close.assert_called_once()


@pytest.mark.django_db
def test_cursor_closed_when_consumer_stops_early(buildings):
    real = connection.chunked_cursor
    closes = []

    def spy():
        cursor = real()
        cursor.close = mock.Mock(wraps=cursor.close)
        closes.append(cursor.close)
        return cursor

    with mock.patch.object(connection, "chunked_cursor", side_effect=spy):
        frames = iter_frames(buildings, ["id"], chunk_size=10)
        first = next(frames)
        closes[0].assert_not_called()
        frames.close()

    assert len(first) == 10
    closes[0].assert_called_once()


@pytest.mark.django_db
def test_same_frames_without_pandas_private_transpose(buildings, monkeypatch):
    """The fallback for a pandas without lib.to_object_array_tuples gives the same frames."""
    from pandas._libs import lib

    fast = read_frame(buildings, [*PLAIN, "boundary"], chunk_size=100)
    monkeypatch.delattr(lib, "to_object_array_tuples")

    slow = read_frame(buildings, [*PLAIN, "boundary"], chunk_size=100)

    pd.testing.assert_frame_equal(slow.drop(columns="boundary"), fast.drop(columns="boundary"))
    assert shapely.equals_exact(slow["boundary"].to_numpy(), fast["boundary"].to_numpy()).all()


@pytest.mark.django_db
@pytest.mark.parametrize("enabled", [True, False])
def test_read_frame_restores_the_garbage_collector(buildings, enabled):
    import gc

    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        read_frame(buildings, ["id", "boundary"], chunk_size=50)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


@pytest.mark.django_db
def test_no_per_row_django_path(buildings):
    """Rows come straight from the cursor: Django's results_iter (converters) never runs."""
    with mock.patch.object(SQLCompiler, "results_iter", side_effect=AssertionError("per-row")):
        df = read_frame(buildings, [*PLAIN, "boundary"])
    assert len(df) == N_BUILDINGS


# --- values()/values_list() querysets --------------------------------------------------------


@pytest.mark.django_db
def test_values_queryset_keeps_its_columns(buildings):
    qs = buildings.values("id", "use_type", "zip__code")
    assert_same_as_orm(read_frame(qs), qs, ["id", "use_type", "zip__code"])

    flat = buildings.values_list("height_m", flat=True)
    assert _column(read_frame(flat), "height_m") == [_norm(v) for v in flat]


@pytest.mark.django_db
def test_grouped_values_queryset(buildings):
    qs = Building.objects.values("zip__code").annotate(n=Count("id")).order_by("zip__code")

    df = read_frame(qs)

    assert list(df.columns) == ["zip__code", "n"]
    assert [tuple(map(_norm, r)) for r in df.astype(object).itertuples(index=False)] == [
        (r["zip__code"], r["n"]) for r in qs
    ]


# --- geometry --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_geometry_round_trips_equal_to_geos(buildings):
    df = read_frame(buildings, ["id", "boundary"], chunk_size=64)

    geos = [b.boundary for b in Building.objects.order_by("id")]
    assert df["boundary"].dtype == object
    expected = shapely.from_wkb([bytes(g.wkb) for g in geos])
    assert shapely.equals_exact(df["boundary"].to_numpy(), expected, tolerance=0).all()
    assert len(df["boundary"].iloc[0].interiors) == 1  # the building with a hole


@pytest.mark.django_db
def test_geometry_as_wkb_bytes(buildings):
    df = read_frame(buildings, ["id", "boundary"], geometry="wkb")

    assert all(isinstance(v, bytes) for v in df["boundary"])
    geos = [b.boundary for b in Building.objects.order_by("id")]
    got = shapely.from_wkb(df["boundary"].to_numpy())
    assert shapely.equals_exact(got, shapely.from_wkb([bytes(g.wkb) for g in geos])).all()


@pytest.mark.django_db
def test_related_and_annotated_geometries(buildings):
    qs = buildings.annotate(center=Centroid("boundary"))

    df = read_frame(qs, ["id", "zip__boundary", "center"])

    orm = list(qs.values_list("zip__boundary", "center"))
    for got, (zip_boundary, center) in zip(df.itertuples(index=False), orm, strict=True):
        if zip_boundary is None:
            assert got.zip__boundary is None
        else:
            assert got.zip__boundary.equals(shapely.from_wkb(bytes(zip_boundary.wkb)))
        assert got.center.distance(shapely.from_wkb(bytes(center.wkb))) < 1e-9


@pytest.mark.django_db
def test_geometry_in_grouped_values_queryset_falls_back_to_backend_format(zips):
    qs = ZipCode.objects.values("code", "boundary").annotate(n=Count("buildings")).order_by("code")

    df = read_frame(qs)
    raw = read_frame(qs, geometry="wkb")

    expected = [shapely.from_wkb(bytes(z.boundary.wkb)) for z in ZipCode.objects.order_by("code")]
    assert shapely.equals_exact(df["boundary"].to_numpy(), expected).all()
    assert shapely.equals_exact(shapely.from_wkb(raw["boundary"].to_numpy()), expected).all()


@pytest.mark.django_db
def test_read_geodataframe_has_crs_and_active_geometry(buildings):
    gpd = pytest.importorskip("geopandas")

    gdf = read_geodataframe(buildings, ["id", "use_type", "boundary", "zip__boundary"])

    assert isinstance(gdf, gpd.GeoDataFrame)
    assert gdf.geometry.name == "boundary" and gdf.crs == "EPSG:4326"
    assert (
        isinstance(gdf["zip__boundary"], gpd.GeoSeries) and gdf["zip__boundary"].crs == "EPSG:4326"
    )
    assert len(gdf) == N_BUILDINGS and gdf["use_type"].dtype == "category"
    other = read_geodataframe(
        buildings, ["id", "boundary", "zip__boundary"], geometry_field="zip__boundary"
    )
    assert other.geometry.name == "zip__boundary"


@pytest.mark.django_db
def test_read_geodataframe_without_geopandas_says_how_to_install(buildings, monkeypatch):
    monkeypatch.setitem(sys.modules, "geopandas", None)

    with pytest.raises(ImportError, match=r"analysis-lib\[geo\]"):
        read_geodataframe(buildings, ["id", "boundary"])


# --- choices ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_value_outside_choices_is_kept_with_a_warning(buildings):
    last = buildings.last()
    Building.objects.filter(id=last.id).update(use_type="barn")

    with pytest.warns(UserWarning, match="barn"):
        df = read_frame(buildings, ["id", "use_type"], chunk_size=100)

    assert df["use_type"].dtype == "category"
    assert df["use_type"].iloc[-1] == "barn"
    assert list(df["use_type"].cat.categories) == [*Building.UseType.values, "barn"]
    assert_same_as_orm(df, buildings, ["id", "use_type"])


# --- bad input -------------------------------------------------------------------------------


BAD_INPUT = [
    (lambda: list(Building.objects.all()), {}, TypeError, "must be a django.db.models.QuerySet"),
    (lambda: Building.objects, {}, TypeError, r"Building.objects.all\(\)"),
    (
        lambda: Building.objects.all(),
        {"chunk_size": 0},
        ValueError,
        "`chunk_size` must be a positive int; got 0",
    ),
    (
        lambda: Building.objects.all(),
        {"chunk_size": -5},
        ValueError,
        "`chunk_size` must be a positive int; got -5",
    ),
    (lambda: Building.objects.all(), {"chunk_size": 2.5}, TypeError, "`chunk_size` must be"),
    (lambda: Building.objects.all(), {"chunk_size": True}, TypeError, "`chunk_size` must be"),
    (
        lambda: Building.objects.all(),
        {"fields": "id"},
        TypeError,
        "`fields` must be a list or tuple",
    ),
    (lambda: Building.objects.all(), {"fields": []}, ValueError, "`fields` must be a non-empty"),
    (
        lambda: Building.objects.all(),
        {"fields": ["id", F("id")]},
        TypeError,
        r"names \(str\); got F\(id\)",
    ),
    (
        lambda: Building.objects.all(),
        {"fields": ["id", "id"]},
        ValueError,
        "`fields` must be a list of distinct names; got 'id'",
    ),
    (
        lambda: Building.objects.all(),
        {"fields": ["id", "heigth_m"]},
        ValueError,
        r"'heigth_m' for model buildings.Building.*Valid names: .*footprint_m2, height_m",
    ),
    (
        lambda: Building.objects.all(),
        {"fields": ["zip__nope"]},
        ValueError,
        r"'zip__nope' for model buildings.Building.*through zip",
    ),
    (
        lambda: Building.objects.all(),
        {"geometry": "wkt"},
        ValueError,
        "`geometry` must be one of 'shapely', 'wkb'; got 'wkt'",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize("func", [iter_frames, read_frame])
@pytest.mark.parametrize(("make", "kwargs", "error", "match"), BAD_INPUT)
def test_bad_input_is_rejected_before_any_query(
    func, make, kwargs, error, match, django_assert_num_queries
):
    queryset = make()
    with django_assert_num_queries(0), pytest.raises(error, match=match):
        func(queryset, **kwargs)  # iter_frames raises at the call, not at the first next()


@pytest.mark.django_db
def test_read_frame_index(buildings):
    df = read_frame(buildings, ["id", "height_m"], index="id")
    assert df.index.name == "id" and df.index.tolist() == list(
        buildings.values_list("id", flat=True)
    )

    with pytest.raises(ValueError, match="index 'pk' is not one of the selected columns"):
        read_frame(buildings, ["id", "height_m"], index="pk")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "geometry_field", "match"),
    [
        (["id", "use_type"], None, "no geometry column among"),
        (["id", "boundary"], "id", "'id' is not a selected geometry column"),
    ],
)
def test_read_geodataframe_bad_geometry_field(buildings, fields, geometry_field, match):
    pytest.importorskip("geopandas")
    with pytest.raises(ValueError, match=match):
        read_geodataframe(buildings, fields, geometry_field=geometry_field)


@pytest.mark.django_db
def test_progress_bar_counts_rows(buildings, capsys):
    n = sum(len(c) for c in iter_frames(buildings, ["id"], chunk_size=100, progress=True))

    assert n == N_BUILDINGS
    assert f"{N_BUILDINGS}/{N_BUILDINGS}" in capsys.readouterr().err


# --- memory ----------------------------------------------------------------------------------

MEMORY_ROWS = 200_000
MEMORY_CHUNK = 20_000


def _insert_many(n: int) -> None:
    """Insert n buildings in one SQL statement (far faster than bulk_create)."""
    with connection.cursor() as cursor:
        if IS_POSTGIS:
            cursor.execute(
                "INSERT INTO buildings_building "
                "(boundary, footprint_m2, height_m, year_built, use_type, source_id) "
                "SELECT ST_MakeEnvelope(i * 1e-5, 0, i * 1e-5 + 1e-5, 1e-5, 4326), i * 0.5, "
                "CASE WHEN i %% 4 = 0 THEN NULL ELSE i %% 50 END, 1900 + i %% 120, "
                "'residential', 'M' || i FROM generate_series(1, %s) AS i",
                [n],
            )
        else:
            # R*Tree upkeep makes the insert ~8x slower; the test's transaction rolls this back.
            cursor.execute("SELECT DisableSpatialIndex('buildings_building', 'boundary')")
            cursor.execute(
                "INSERT INTO buildings_building "
                "(boundary, footprint_m2, height_m, year_built, use_type, source_id) "
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s) "
                "SELECT BuildMbr(i * 1e-5, 0, i * 1e-5 + 1e-5, 1e-5, 4326), i * 0.5, "
                "CASE WHEN i %% 4 = 0 THEN NULL ELSE i %% 50 END, 1900 + i %% 120, "
                "'residential', 'M' || i FROM seq",
                [n],
            )


@pytest.mark.django_db
def test_iterating_keeps_peak_near_one_chunk(db):
    _insert_many(MEMORY_ROWS)
    qs = Building.objects.order_by("id")
    half = qs.filter(id__lte=qs.values_list("id", flat=True)[MEMORY_ROWS // 2 - 1])
    fields = ["id", "footprint_m2", "height_m", "year_built", "use_type", "source_id"]

    def one_chunk():
        return len(next(iter_frames(qs, fields, chunk_size=MEMORY_CHUNK)))

    def all_chunks(queryset):
        return sum(len(c) for c in iter_frames(queryset, fields, chunk_size=MEMORY_CHUNK))

    def whole(queryset):
        return len(read_frame(queryset, fields, chunk_size=MEMORY_CHUNK))

    one_peak, n_one = heap_peak(one_chunk)
    half_peak, n_half = heap_peak(lambda: all_chunks(half))
    all_peak, n_all = heap_peak(lambda: all_chunks(qs))
    whole_half_peak, _ = heap_peak(lambda: whole(half))
    whole_peak, n_whole = heap_peak(lambda: whole(qs))

    assert (n_one, n_half, n_all, n_whole) == (
        MEMORY_CHUNK,
        MEMORY_ROWS // 2,
        MEMORY_ROWS,
        MEMORY_ROWS,
    )
    # Ten chunks cost about what one does (the consumer holds one frame while the next is
    # built, hence the margin). The second half of the rows adds to the whole read at least
    # their numeric columns (34 bytes a row: 3.4 MB), and next to nothing to the iteration.
    # (No fixed ratio of whole to iterated: on pandas 3 the text lives in compact Arrow
    # buffers, so the finished frame is half its pandas 2 size, while a chunk's transient row
    # tuples are the same.)
    assert all_peak < 2.5 * one_peak, (all_peak, one_peak)
    whole_growth = whole_peak - whole_half_peak
    assert whole_growth > 3_000_000, (whole_peak, whole_half_peak)
    assert all_peak - half_peak < 0.25 * whole_growth, (all_peak, half_peak, whole_growth)


# --- engines: the Arrow ADBC path gives what the DB-API path gives ------------------------------
#
# ADBC reads on a second connection, so it needs committed rows in a database a second
# connection can open: on SpatiaLite a temporary file (the test database is in memory), on
# PostGIS the test database with transaction=True.

ADBC_ROWS = 120
ADBC_ALIAS = "adbc_file"
# PostGIS: committed rows in the test database; SpatiaLite: no test database, a file alias.
adbc_db_mark = pytest.mark.django_db(transaction=True) if IS_POSTGIS else (lambda test: test)


def _adbc_buildings(using: str) -> None:
    """ADBC_ROWS buildings, committed; heights NULL for the first 50 rows (by id)."""
    zip_a = ZipCode.objects.using(using).create(
        code="02001", state="MA", boundary=MultiPolygon(Polygon.from_bbox((0, 0, 1, 1)), srid=4326)
    )
    uses = list(Building.UseType.values)
    objs = []
    for i in range(ADBC_ROWS):
        boundary = Polygon.from_bbox((i * 0.001, 0, i * 0.001 + 0.0005, 0.0005))
        boundary.srid = 4326
        objs.append(
            Building(
                boundary=boundary,
                footprint_m2=float(i) if i % 2 else i + 0.25,  # integer-valued and not
                height_m=None if i < 50 else i / 4,
                year_built=None if i % 3 == 0 else 1900 + i,
                use_type=uses[i % len(uses)],
                source_id=f"A{i:03d}" if i % 5 else "",
                zip=None if i % 4 == 0 else zip_a,
            )
        )
    Building.objects.using(using).bulk_create(objs)


@pytest.fixture(scope="module")
def adbc_file_alias(tmp_path_factory, django_db_blocker):
    """A second database alias on a SpatiaLite FILE, migrated and filled (SpatiaLite only)."""
    from django.core.management import call_command
    from django.db import connections

    if IS_POSTGIS:
        pytest.skip("on PostGIS the ADBC tests use the test database itself")
    path = tmp_path_factory.mktemp("adbc") / "adbc.sqlite3"
    settings_dict = {**connections.settings["default"], "NAME": str(path), "TEST": {}}
    connections.settings[ADBC_ALIAS] = settings_dict
    with django_db_blocker.unblock():
        call_command("migrate", database=ADBC_ALIAS, verbosity=0)
        _adbc_buildings(ADBC_ALIAS)
        yield ADBC_ALIAS
        connections[ADBC_ALIAS].close()
    del connections[ADBC_ALIAS]
    del connections.settings[ADBC_ALIAS]


@pytest.fixture
def adbc_db(request):
    """The alias of a database holding the committed ADBC buildings, on either backend."""
    if IS_POSTGIS:
        _adbc_buildings("default")
        return "default"
    return request.getfixturevalue("adbc_file_alias")


def _adbc_querysets(using: str) -> dict:
    qs = Building.objects.using(using).order_by("id")
    return {
        "plain": (qs, ["id", "footprint_m2", "height_m", "year_built", "use_type", "source_id"]),
        "related": (qs.filter(footprint_m2__gt=3), ["id", "zip", "zip__code", "zip__state"]),
        "annotated": (
            qs.annotate(
                n=Count("zip__buildings"),
                tall=ExpressionWrapper(Q(height_m__gt=20), output_field=BooleanField()),
                day=Cast(Value("2023-02-01"), DateField()),
                seen=Cast(Value("2024-05-06 07:08:09"), DateTimeField()),
            ),
            ["id", "n", "tall", "day", "seen"],
        ),
        "geometry": (qs, ["id", "boundary", "zip__boundary"]),
        "empty": (qs.filter(footprint_m2__lt=-1), ["id", "height_m", "use_type", "boundary"]),
    }


@adbc_db_mark
@pytest.mark.parametrize("case", ["plain", "related", "annotated", "geometry", "empty"])
@pytest.mark.parametrize("geometry", ["shapely", "wkb"])
def test_adbc_engine_gives_the_dbapi_frame(adbc_db, case, geometry):
    qs, fields = _adbc_querysets(adbc_db)[case]

    dbapi = read_frame(qs, fields, geometry=geometry, engine="dbapi")
    adbc = read_frame(qs, fields, geometry=geometry, engine="adbc")

    assert len(dbapi) == qs.count()
    if geometry == "shapely" and "boundary" in fields and len(dbapi):
        assert shapely.equals(adbc["boundary"], dbapi["boundary"]).all()
        adbc, dbapi = adbc.drop(columns="boundary"), dbapi.drop(columns="boundary")
        assert shapely.equals(adbc["zip__boundary"].dropna(), dbapi["zip__boundary"].dropna()).all()
        adbc, dbapi = adbc.drop(columns="zip__boundary"), dbapi.drop(columns="zip__boundary")
    pd.testing.assert_frame_equal(adbc, dbapi)
    plain = [f for f in fields if f not in ("boundary", "zip__boundary", "day", "seen")]
    assert_same_as_orm(dbapi[plain], qs, plain)  # and both are what the ORM gives


CONTRACT_FIELDS = {
    "id": "int64",
    "footprint_m2": "float64",
    "height_m": "float64",
    "year_built": "Int64",
    "use_type": "category",
    "source_id": TEXT,
    "zip__code": TEXT,  # NULL through the LEFT JOIN: NaN on pandas 3, None on pandas 2
    "tall": "boolean",
    "day": "datetime64[ns]",
    "seen": "datetime64[ns, UTC]",
    "boundary": "object",
}


@adbc_db_mark
@pytest.mark.parametrize("engine", ["dbapi", "adbc"])
def test_dtype_contract_is_the_same_for_every_chunk_empty_and_whole(adbc_db, engine):
    qs = (
        Building.objects.using(adbc_db)
        .order_by("-id")  # heights first: SQLite's ADBC driver types a column from batch one
        .annotate(
            tall=ExpressionWrapper(Q(height_m__gt=20), output_field=BooleanField()),
            day=Cast(Value("2023-02-01"), DateField()),
            seen=Cast(Value("2024-05-06 07:08:09"), DateTimeField()),
        )
    )
    fields = list(CONTRACT_FIELDS)

    chunks = list(iter_frames(qs, fields, chunk_size=7, engine=engine))
    whole = read_frame(qs, fields, engine=engine)
    empty = read_frame(qs.filter(footprint_m2__lt=-1), fields, engine=engine)
    first_rows_null = read_frame(qs.filter(height_m=None), fields, engine=engine)

    assert len(chunks) == math.ceil(ADBC_ROWS / 7) and len(empty) == 0
    for frame in [*chunks, whole, empty, first_rows_null]:
        assert frame.dtypes.astype(str).to_dict() == CONTRACT_FIELDS
    missing = whole["zip__code"].isna()
    assert missing.sum() == qs.filter(zip=None).count() > 0
    if PANDAS_3:  # the str dtype's missing value
        assert whole["zip__code"][missing].map(lambda v: isinstance(v, float)).all()
    else:
        assert whole["zip__code"][missing].map(lambda v: v is None).all()
    assert (whole["seen"] == pd.Timestamp("2024-05-06 07:08:09", tz="UTC")).all()


@adbc_db_mark
@pytest.mark.parametrize("chunk_size", [1, 7, 50, ADBC_ROWS, ADBC_ROWS + 1])
def test_adbc_chunks_are_rechunked_like_dbapi(adbc_db, chunk_size):
    qs, fields = _adbc_querysets(adbc_db)["plain"]
    fields = ["id", "footprint_m2", "year_built", "use_type"]  # no all-NULL first batch here

    adbc = list(iter_frames(qs, fields, chunk_size=chunk_size, engine="adbc"))
    dbapi = list(iter_frames(qs, fields, chunk_size=chunk_size, engine="dbapi"))

    assert [len(c) for c in adbc] == [len(c) for c in dbapi]
    assert len(adbc) == math.ceil(ADBC_ROWS / chunk_size)
    for a, d in zip(adbc, dbapi, strict=True):
        pd.testing.assert_frame_equal(a, d)


@adbc_db_mark
def test_adbc_auto_is_used_and_params_stay_params(adbc_db, monkeypatch):
    from analysis_lib.loaders import _read

    calls = []
    real = _read.iter_adbc
    monkeypatch.setattr(_read, "iter_adbc", lambda *a, **k: calls.append(1) or real(*a, **k))
    evil = "x'); DROP TABLE buildings_building; --"
    qs = Building.objects.using(adbc_db).filter(source_id__in=[evil, "A001", "100%"])

    df = read_frame(qs, ["id", "source_id"])  # engine="auto"

    assert calls == [1]
    assert df["source_id"].tolist() == ["A001"]
    assert Building.objects.using(adbc_db).count() == ADBC_ROWS


@adbc_db_mark
@pytest.mark.skipif(IS_POSTGIS, reason="SQLite's dynamic typing; PostgreSQL columns are typed")
def test_adbc_sqlite_type_change_between_batches(adbc_db):
    # height_m is NULL in the first 50 rows: with 10-row batches the driver types the column
    # from NULLs, then meets REALs. read_frame reruns on DB-API; iter_frames says so.
    qs = Building.objects.using(adbc_db).order_by("id")
    fields = ["id", "height_m"]
    expected = read_frame(qs, fields, chunk_size=10, engine="dbapi")

    pd.testing.assert_frame_equal(read_frame(qs, fields, chunk_size=10), expected)
    with pytest.raises(ValueError, match="engine='adbc' cannot be used: .*yielded"):
        read_frame(qs, fields, chunk_size=10, engine="adbc")
    chunks = iter_frames(qs, fields, chunk_size=10, engine="adbc")
    assert len(next(chunks)) == 10
    with pytest.raises(
        EngineUnavailable, match="after 50 rows were yielded.*engine='dbapi'"
    ) as err:
        list(chunks)
    assert err.value.rows == 50  # the first 50 heights are NULL
    # auto keeps iter_frames on DB-API on SQLite, so it never fails half-way
    auto = pd.concat(iter_frames(qs, fields, chunk_size=10), ignore_index=True)
    pd.testing.assert_frame_equal(auto, expected)


@adbc_db_mark
def test_adbc_is_refused_inside_atomic_where_auto_sees_uncommitted_rows(adbc_db):
    from django.db import transaction

    qs = Building.objects.using(adbc_db).order_by("id")
    with transaction.atomic(using=adbc_db):
        Building.objects.using(adbc_db).filter(id=qs.first().id).update(source_id="uncommitted")
        with pytest.raises(ValueError, match="atomic"):
            read_frame(qs, ["id"], engine="adbc")
        df = read_frame(qs, ["id", "source_id"])
        assert df["source_id"].iloc[0] == "uncommitted"
        transaction.set_rollback(True, using=adbc_db)


@pytest.mark.django_db
def test_adbc_refused_on_the_test_database(buildings):
    # pytest-django's test database: in memory on SpatiaLite, in a transaction on PostGIS.
    with pytest.raises(ValueError, match="engine='adbc' cannot be used: .*(in memory|atomic)"):
        read_frame(buildings, ["id"], engine="adbc")
    with pytest.raises(ValueError, match="engine='adbc' cannot be used"):
        next(iter_frames(buildings, ["id"], engine="adbc"))
    assert len(read_frame(buildings, ["id"])) == N_BUILDINGS  # auto: DB-API


@adbc_db_mark
def test_adbc_without_the_driver(adbc_db, monkeypatch):
    qs = Building.objects.using(adbc_db).order_by("id")
    for name in ("adbc_driver_sqlite.dbapi", "adbc_driver_postgresql.dbapi"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError

    with pytest.raises(ValueError, match="not installed: pip install 'adbc-driver-"):
        read_frame(qs, ["id"], engine="adbc")
    assert len(read_frame(qs, ["id"])) == ADBC_ROWS


@adbc_db_mark
def test_adbc_without_pyarrow_says_so(adbc_db, monkeypatch):
    qs = Building.objects.using(adbc_db).order_by("id")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError

    with pytest.raises(ValueError, match="needs pyarrow, which cannot be imported here"):
        read_frame(qs, ["id"], engine="adbc")
    assert len(read_frame(qs, ["id"])) == ADBC_ROWS  # auto: DB-API


def _count_parts(monkeypatch) -> list:
    """Record the primary-key range of every part read_frame reads in parallel."""
    from analysis_lib.loaders import _adbc

    parts = []
    real = _adbc.read_part
    monkeypatch.setattr(
        _adbc, "read_part", lambda plan, *a: parts.append(plan.params) or real(plan, *a)
    )
    return parts


@adbc_db_mark
@pytest.mark.parametrize("parallel", [2, 3])
@pytest.mark.parametrize("case", ["plain", "related", "geometry", "unordered", "values"])
def test_parallel_read_gives_the_one_piece_frame(adbc_db, monkeypatch, case, parallel):
    qs, fields = _adbc_querysets(adbc_db)["geometry" if case == "geometry" else "plain"]
    if case == "related":
        qs, fields = _adbc_querysets(adbc_db)["related"]
    elif case == "unordered":
        qs = qs.order_by()
    elif case == "values":  # a values() queryset read with fields=None
        qs, fields = qs.values("id", "use_type", "zip__code"), None
    expected = read_frame(qs, fields, geometry="wkb", engine="dbapi")
    parts = _count_parts(monkeypatch)

    got = read_frame(qs, fields, geometry="wkb", chunk_size=7, parallel=parallel)

    assert len(parts) == parallel  # it did split: the equality below is not one piece vs one
    if case == "unordered":  # no order to keep: compare as sets of rows
        got, expected = got.sort_values("id", ignore_index=True), expected.sort_values("id")
        expected = expected.reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


@adbc_db_mark
@pytest.mark.parametrize(
    "case",
    ["sliced", "distinct", "by height", "by -id", "aggregate", "union"],
)
def test_parallel_read_keeps_what_ranges_would_break(adbc_db, monkeypatch, case):
    qs = Building.objects.using(adbc_db).order_by("id")
    fields = ["id", "height_m"]
    qs = {
        "sliced": qs[5:90],
        "distinct": qs.values("use_type").distinct(),
        "by height": qs.order_by("height_m", "-id"),
        "by -id": qs.order_by("-id"),
        "aggregate": qs.annotate(n=Count("zip__buildings")),
        "union": qs.order_by().filter(id__lt=30).union(qs.order_by().filter(id__gt=90)),
    }[case]
    if case == "distinct":
        fields = ["use_type"]
    elif case == "aggregate":
        fields = ["id", "n"]
    parts = _count_parts(monkeypatch)

    got = read_frame(qs, fields, parallel=2)

    assert parts == []  # read in one piece
    pd.testing.assert_frame_equal(got, read_frame(qs, fields, engine="dbapi"))


@adbc_db_mark
def test_parallel_read_is_automatic_only_on_large_key_spans(adbc_db, monkeypatch):
    from analysis_lib.loaders import _adbc

    qs, fields = _adbc_querysets(adbc_db)["plain"]
    parts = _count_parts(monkeypatch)
    read_frame(qs, fields)  # 120 rows: below the automatic threshold
    assert parts == []
    monkeypatch.setattr(_adbc, "AUTO_SPLIT_MIN_SPAN", 10)
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    pd.testing.assert_frame_equal(read_frame(qs, fields), read_frame(qs, fields, engine="dbapi"))
    assert len(parts) == 2
    read_frame(qs, fields, parallel=1)
    assert len(parts) == 2


@adbc_db_mark
@pytest.mark.skipif(IS_POSTGIS, reason="SQLite's dynamic typing; PostgreSQL columns are typed")
def test_parallel_read_falls_back_when_a_part_fails(adbc_db):
    # Rows 1-50 have NULL heights: the first part's driver types height_m from NULLs and
    # then meets REALs. auto reruns the whole read on DB-API; engine="adbc" says why.
    qs = Building.objects.using(adbc_db).order_by("id")
    fields = ["id", "height_m"]
    expected = read_frame(qs, fields, engine="dbapi")

    pd.testing.assert_frame_equal(read_frame(qs, fields, chunk_size=10, parallel=2), expected)
    with pytest.raises(ValueError, match="engine='adbc' cannot be used: .*yielded"):
        read_frame(qs, fields, chunk_size=10, engine="adbc", parallel=2)


@adbc_db_mark
def test_parallel_read_progress_counts_every_row(adbc_db, capsys):
    qs, fields = _adbc_querysets(adbc_db)["plain"]

    df = read_frame(qs, ["id", "use_type"], chunk_size=7, parallel=2, progress=True)

    assert len(df) == ADBC_ROWS
    assert f"{ADBC_ROWS}/{ADBC_ROWS}" in capsys.readouterr().err


@adbc_db_mark
def test_adbc_choices_outside_the_categories_take_the_warning_path(adbc_db):
    qs = Building.objects.using(adbc_db).order_by("id")
    Building.objects.using(adbc_db).filter(id=qs.first().id).update(use_type="castle")
    try:
        with pytest.warns(UserWarning, match="castle"):
            adbc = read_frame(qs, ["id", "use_type"], engine="adbc")
        with pytest.warns(UserWarning, match="castle"):
            dbapi = read_frame(qs, ["id", "use_type"], engine="dbapi")
    finally:
        Building.objects.using(adbc_db).filter(use_type="castle").update(use_type="other")
    pd.testing.assert_frame_equal(adbc, dbapi)
    assert adbc["use_type"].iloc[0] == "castle"


@pytest.mark.parametrize(
    ("parallel", "error"),
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_bad_parallel(parallel, error):
    with pytest.raises(error, match="parallel"):
        read_frame(Building.objects.all(), ["id"], parallel=parallel)


@pytest.mark.parametrize("engine", ["ADBC", "", None, "pyarrow"])
def test_bad_engine(engine):
    with pytest.raises(ValueError, match="`engine` must be one of 'auto', 'dbapi', 'adbc'; got"):
        read_frame(Building.objects.all(), ["id"], engine=engine)


# --- hostile strings through a filter: parameters stay data on every engine ------------------
#
# On PostgreSQL the ADBC engine binds a filter's parameters as literals with the driver's own
# quoting (bind_literals: Django's compose_sql, psycopg's mogrify) so that the driver can
# stream with COPY; these strings must still come back as exactly the rows the ORM finds.

HOSTILE = [
    "it's",
    "O''Brien",
    "back\\slash",
    "trailing\\",
    "\\'; DROP TABLE buildings_building; --",
    "x'); DROP TABLE buildings_building; --",
    "ünïcødé ✓ 日本語 🏠",
    "100%",
    "%%",
    "%s",
    "%(name)s",
    "$1",
    "?",
    "E'\\x41'",
    "line\nbreak\ttab",
    "$$dollar$$",
]


@adbc_db_mark
def test_hostile_strings_through_a_filter_give_the_orms_rows(adbc_db, monkeypatch):
    from analysis_lib.loaders import _adbc

    bound = []
    real_bind = _adbc.bind_literals
    monkeypatch.setattr(_adbc, "bind_literals", lambda *a: bound.append(a[1]) or real_bind(*a))
    qs = Building.objects.using(adbc_db)
    ids = list(qs.order_by("id").values_list("id", flat=True)[: len(HOSTILE)])
    before = dict(qs.filter(id__in=ids).values_list("id", "source_id"))
    for pk, text in zip(ids, HOSTILE, strict=True):
        qs.filter(pk=pk).update(source_id=text)
    try:
        querysets = [qs.filter(source_id=text) for text in HOSTILE]
        querysets += [
            qs.filter(source_id__in=HOSTILE[:6]),
            qs.filter(source_id__contains="%"),  # LIKE, with Django's own escaping of %
            qs.filter(source_id__startswith="\\"),
            qs.filter(source_id__icontains="drop table"),
            qs.filter(source_id__contains="日本語 🏠"),
            qs.exclude(source_id__in=HOSTILE),
        ]
        for queryset in querysets:
            queryset = queryset.order_by("id")
            expected = list(queryset.values_list("id", "source_id"))
            assert expected, queryset.query
            for engine in ("adbc", "dbapi"):
                df = read_frame(queryset, ["id", "source_id"], engine=engine)
                assert list(df.itertuples(index=False, name=None)) == expected, engine
        assert qs.count() == ADBC_ROWS  # nothing was dropped or changed
    finally:
        for pk, text in before.items():
            qs.filter(pk=pk).update(source_id=text)
    if IS_POSTGIS:  # every filtered ADBC read went through the literal binding (COPY)
        assert len(bound) == len(querysets)


@adbc_db_mark
@pytest.mark.skipif(not IS_POSTGIS, reason="SQLite text may hold NUL; PostgreSQL's cannot")
def test_a_nul_byte_in_a_filter_is_refused(adbc_db):
    from django.db.utils import DataError

    qs = Building.objects.using(adbc_db).filter(source_id="A001\x00' OR 1=1 --")

    for engine in ("adbc", "auto"):
        with pytest.raises(ValueError, match=r"query parameter 1 of 1 .* contains a NUL byte"):
            read_frame(qs, ["id", "source_id"], engine=engine)
    # Django's own cursor refuses it too (psycopg: text cannot contain NUL bytes).
    with pytest.raises((ValueError, DataError), match="NUL"):
        read_frame(qs, ["id", "source_id"], engine="dbapi")


# --- read_frame converts the driver's batches as they come --------------------------------------


@adbc_db_mark
@pytest.mark.parametrize("parallel", [1, 2])
def test_read_frame_over_many_driver_batches_gives_the_dbapi_frame(adbc_db, monkeypatch, parallel):
    # Tiny batches (PostgreSQL: a 256-byte hint; SQLite: chunk_size rows a batch), so that
    # every column arrives in many Arrow chunks, some with NULLs and some without, and
    # read_frame converts them without cutting them into chunks first (parallel parts: in
    # groups of at least chunk_size rows).
    from analysis_lib.loaders import _adbc

    monkeypatch.setattr(_adbc, "PG_BATCH_BYTES", 256)
    chunk_counts = []
    real = _adbc._columns_frame
    monkeypatch.setattr(
        _adbc,
        "_columns_frame",
        lambda columns, *a: chunk_counts.append(columns[0].num_chunks) or real(columns, *a),
    )
    parts = _count_parts(monkeypatch)
    qs = Building.objects.using(adbc_db).order_by("id")
    qs = qs.annotate(tall=ExpressionWrapper(Q(height_m__gt=20), output_field=BooleanField()))
    fields = ["id", "footprint_m2", "year_built", "use_type", "source_id"]
    if IS_POSTGIS:  # SQLite's driver would type them from their first batch, all NULL
        fields += ["height_m", "tall"]
    expected = read_frame(qs, fields, engine="dbapi")

    got = read_frame(qs, fields, chunk_size=7, engine="adbc", parallel=parallel)

    assert len(parts) == (parallel if parallel > 1 else 0)
    if parallel == 1 or IS_POSTGIS:  # SQLite's parts: batches of chunk_size rows, one a group
        assert max(chunk_counts) > 1, chunk_counts  # columns of several batches converted
    else:
        assert len(chunk_counts) > parallel, chunk_counts  # each part in several groups
    pd.testing.assert_frame_equal(got, expected)
    got.loc[0, ["footprint_m2", "id", "year_built"]] = [-1.0, -1, -1]  # writable, not Arrow's
    assert got.loc[0, ["footprint_m2", "id", "year_built"]].tolist() == [-1.0, -1, -1]


def test_driver_batches_of_different_types_are_an_engine_failure():
    # SQLite's driver types a column from its first batch; should a later batch still come
    # typed otherwise, read_frame says so as EngineUnavailable ("auto" then reruns on DB-API).
    import pyarrow as pa

    from analysis_lib.loaders import _adbc

    first = pa.record_batch([pa.array([1, 2])], names=["height_m"])
    later = pa.record_batch([pa.array([1.5])], names=["height_m"])

    class Reader:
        schema = first.schema

        def __iter__(self):
            return iter([first, later])

    with pytest.raises(EngineUnavailable, match="batches of different column types"):
        list(_adbc._batch_frames(Reader(), None, None, None, None))
