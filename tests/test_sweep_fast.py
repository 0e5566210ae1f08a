"""The sweep's raw SpatiaLite read: boxes from blob headers, WKB rebuilt only for GEOS.

Every blob SpatiaLite can store must give the stock lookup's answer: the fast layout
(uncompressed little-endian XY), multi-geometries (rebuilt part by part), compressed and XYZ
blobs (left to SpatiaLite's own ``AsBinary``), NULL geometries; on both engines, whatever the
chunk size.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from analysis_lib import Sweep, summarize_by_region
from tests.reuse_fixtures import make_neighborhoods, make_parcels, make_trees
from tests.test_regions import PARCEL_AGGREGATES, TREE_AGGREGATES, _compare, _expected

pytestmark = pytest.mark.django_db


def _spatialite(connection) -> bool:
    return connection.vendor == "sqlite" and getattr(connection.ops, "spatialite", False)


@pytest.fixture
def world(db):
    from django.db import connection

    if not _spatialite(connection):
        pytest.skip("the raw blob read is SpatiaLite's")
    hoods = make_neighborhoods()
    make_trees()
    make_parcels()
    return hoods


@pytest.fixture
def counted(monkeypatch):
    """Count the raw reads and the blobs converted by SpatiaLite."""
    from analysis_lib.regions import _chunks

    seen = {"raw_reads": 0, "converted": 0}  # raw reads that ran (ADBC is refused in a test)
    real_read, real_convert = _chunks.spatialite_chunks, _chunks._SpatiaLiteWkb.__call__

    def read(items, spec, vocabulary, chunk_size, engine):
        seen["raw_reads"] += engine == "dbapi"
        return real_read(items, spec, vocabulary, chunk_size, engine)

    def convert(self, buffer, starts, ends):
        seen["converted"] += len(starts)
        return real_convert(self, buffer, starts, ends)

    monkeypatch.setattr(_chunks, "spatialite_chunks", read)
    monkeypatch.setattr(_chunks._SpatiaLiteWkb, "__call__", convert)
    return seen


def _blob(sql: str, *params) -> bytes:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return bytes(cursor.fetchone()[0])


def _chunk_of(blobs: list[bytes | None]):
    from django.db import connection

    from analysis_lib.regions import _chunks

    valid = np.array([b is not None for b in blobs])
    data = [b or b"" for b in blobs]
    offsets = np.r_[0, np.cumsum([len(b) for b in data])].astype(np.int64)
    buffer = np.frombuffer(b"".join(data), np.uint8)
    return _chunks._blob_chunk(
        len(blobs), buffer, offsets, valid, {}, _chunks._SpatiaLiteWkb(connection)
    )


@pytest.mark.parametrize(
    "wkt",
    [
        "POINT(1.5 -2)",
        "POLYGON((0 0, 4 0, 4 3, 0 3, 0 0), (1 1, 2 1, 2 2, 1 1))",
        "MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)), "
        "((5 5, 7 5, 7 8, 5 5), (5.5 5.2, 6 5.2, 6 6, 5.5 5.2)))",
        "MULTIPOINT((1 2), (3 4))",
        "LINESTRING(0 0, 1 1, 2 0)",
        "MULTILINESTRING((0 0, 1 1), (2 2, 3 3, 4 2))",
    ],
)
def test_blob_header_box_and_wkb_equal_spatialite_s_own(world, wkt):
    blob = _blob("SELECT GeomFromText(%s, 4326)", wkt)
    wkb = _blob("SELECT AsBinary(GeomFromText(%s, 4326))", wkt)
    chunk = _chunk_of([blob, None, blob])
    geometry = shapely.from_wkt(wkt)
    np.testing.assert_array_equal(chunk.bounds[0], shapely.bounds(geometry))
    assert np.isnan(chunk.bounds[1]).all()
    got = chunk.wkb_of(np.array([2, 1, 0]))
    assert got[1] is None
    assert got[0] == wkb and got[2] == wkb  # byte for byte what AsBinary gives


@pytest.mark.parametrize(
    "expression",
    [
        "CompressGeometry(GeomFromText(%s, 4326))",
        "CastToXYZ(GeomFromText(%s, 4326))",
        "CastToXYM(GeomFromText(%s, 4326))",
        "CompressGeometry(CastToXYZ(GeomFromText(%s, 4326)))",
    ],
)
def test_blobs_not_in_the_fast_layout_go_to_geos_through_spatialite_s_wkb(world, expression):
    wkt = "MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0)), ((5 5, 7 5, 7 8, 5 5)))"
    blob = _blob(f"SELECT {expression}", wkt)
    wkb = _blob(f"SELECT AsBinary({expression})", wkt)
    plain = _blob("SELECT GeomFromText(%s, 4326)", wkt)
    chunk = _chunk_of([plain, blob])
    assert np.isfinite(chunk.bounds[0]).all()
    assert np.isnan(chunk.bounds[1]).all()  # its box is not read: the raster leaves it to GEOS
    got = chunk.wkb_of(np.array([1]))
    assert got[0] == wkb
    assert shapely.equals(shapely.from_wkb(got[0]), shapely.from_wkt(wkt))


def test_big_endian_and_foreign_blobs_are_not_read_as_spatialite(world):
    from analysis_lib.regions import _blobs

    blob = bytearray(_blob("SELECT GeomFromText('POINT(1 2)', 4326)"))
    big = bytes(blob[:1]) + b"\x00" + bytes(blob[2:])  # endian byte says big-endian
    wkb = shapely.to_wkb(shapely.Point(1, 2))  # a WKB, not a SpatiaLite blob
    buffer = np.frombuffer(big + wkb, np.uint8)
    offsets = np.array([0, len(big), len(big) + len(wkb)], np.int64)
    klass, bounds = _blobs.blob_headers(buffer, offsets[:-1], offsets[1:])
    assert klass.tolist() == [0, 0]
    assert np.isnan(bounds).all()


def test_compressed_parcels_equal_the_stock_lookup(world, counted):
    from django.db import connection
    from reuse_app.models import Neighborhood, Parcel

    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE reuse_app_parcel SET shape = CompressGeometry(shape) WHERE id % 2 = 0"
        )
        assert cursor.rowcount > 5
    items = Parcel.objects.all()
    expected = _expected(items, "shape", "within", PARCEL_AGGREGATES)
    assert expected["n_items"].sum() > 0
    for chunk_size in (1, 7, 100_000):
        got = summarize_by_region(
            Neighborhood.objects.all(),
            items,
            key="name",
            aggregates=PARCEL_AGGREGATES,
            strategy=Sweep(chunk_size=chunk_size, workers=0),
            item_geometry="shape",
        )
        _compare(got, expected, f"chunk_size={chunk_size}")
    assert counted["raw_reads"] == 3
    assert counted["converted"] >= 3 * 5  # the compressed blobs went through SpatiaLite


def test_multipolygon_items_and_null_geometries_equal_the_stock_lookup(world, counted):
    from reuse_app.models import Neighborhood, Parcel

    # Multipolygon items: every neighbourhood lies within itself (and birch, in alder's hole,
    # within birch only); each blob is rebuilt part by part into WKB.
    hoods = Neighborhood.objects.all()
    expected = _expected(hoods, "boundary", "within", {})
    got = summarize_by_region(hoods, hoods, key="name", strategy=Sweep(chunk_size=2, workers=0))
    _compare(got, expected, "neighbourhoods in themselves")
    assert (got["n_items"] >= 1).all()
    # Points, some NULL: a NULL geometry is in no region.
    for parcel in Parcel.objects.order_by("pk"):
        parcel.centre = None if parcel.pk % 3 == 0 else parcel.shape.centroid
        parcel.save(update_fields=["centre"])
    items = Parcel.objects.all()
    assert items.filter(centre__isnull=True).exists()
    expected = _expected(items, "centre", "within", PARCEL_AGGREGATES)
    assert expected["n_items"].sum() > 0
    for chunk_size in (1, 7, 100_000):
        got = summarize_by_region(
            Neighborhood.objects.all(),
            items,
            key="name",
            aggregates=PARCEL_AGGREGATES,
            strategy=Sweep(chunk_size=chunk_size, workers=1),
            item_geometry="centre",
        )
        _compare(got, expected, f"centres, chunk_size={chunk_size}")
    assert counted["raw_reads"] == 4 and counted["converted"] == 0


@pytest.mark.parametrize("predicate", ["within", "centroid"])
def test_raw_read_equals_the_frame_read(world, monkeypatch, predicate):
    # The same sweep through iter_frames (the path every other database takes).
    from reuse_app.models import Neighborhood, Tree

    from analysis_lib.regions import _chunks

    def run():
        return summarize_by_region(
            Neighborhood.objects.all(),
            Tree.objects.all(),
            key="name",
            aggregates=TREE_AGGREGATES,
            predicate=predicate,
            strategy=Sweep(chunk_size=7, workers=0),
        )

    raw = run()
    monkeypatch.setattr(_chunks, "spatialite_reason", lambda items, spec: "forced")
    framed = run()
    assert raw.equals(framed)


# A fresh process on a SpatiaLite file (ADBC cannot read the in-memory test database): the
# sweep on both engines and three chunk sizes, with a third of the blobs compressed.
_ENGINES_SCRIPT = """
import json
import pandas as pd
from analysis_lib import Sweep, setup_django
setup_django()
from django.db import connection
from analysis_lib.regions import _chunks
from project.buildings.analysis import summarize_by_zip
with connection.cursor() as cursor:
    cursor.execute("UPDATE buildings_building SET boundary = CompressGeometry(boundary) "
                   "WHERE id % 3 = 0")
converted = []
real = _chunks._SpatiaLiteWkb.__call__
def spy(self, buffer, starts, ends):
    converted.append(len(starts))
    return real(self, buffer, starts, ends)
_chunks._SpatiaLiteWkb.__call__ = spy
base = summarize_by_zip("MA", strategy="orm")
out = {{"n": int(base["n_buildings"].sum()), "diffs": [], "converted": {{}}}}
for engine in ("adbc", "dbapi"):
    for chunk_size in (1, 7, 100000):
        converted.clear()
        got = summarize_by_zip("MA", strategy=Sweep(chunk_size=chunk_size, engine=engine))
        out["converted"][f"{{engine}} {{chunk_size}}"] = sum(converted)
        try:  # sums in another order: equal to rounding
            pd.testing.assert_frame_equal(got, base, check_exact=False, rtol=1e-12)
        except AssertionError as exc:
            out["diffs"].append([engine, chunk_size, str(exc)])
# A spatial filter on the items: SpatiaLite functions in the WHERE of the raw read.
from django.contrib.gis.geos import Polygon
from project.buildings.models import Building, ZipCode
box = Polygon.from_bbox(ZipCode.objects.order_by("code").first().boundary.extent)
some = Building.objects.filter(boundary__intersects=box)
filtered = summarize_by_zip("MA", some, strategy="orm")
out["filtered_n"] = int(filtered["n_buildings"].sum())
# (a geometry parameter: ADBC refuses it, "auto" falls back to DB-API)
for engine in ("auto", "dbapi"):
    got = summarize_by_zip("MA", some, strategy=Sweep(chunk_size=7, engine=engine))
    try:
        pd.testing.assert_frame_equal(got, filtered, check_exact=False, rtol=1e-12)
    except AssertionError as exc:
        out["diffs"].append([engine, "filtered", str(exc)])
# A SpatiaLite function in the WHERE without a geometry parameter: ADBC runs it, on a
# connection with SpatiaLite loaded (the first try, without it, says "no such function").
valid = Building.objects.filter(boundary__isvalid=True, pk__gt=10)
checked = summarize_by_zip("MA", valid, strategy="orm")
out["valid_n"] = int(checked["n_buildings"].sum())
got = summarize_by_zip("MA", valid, strategy=Sweep(chunk_size=50, engine="adbc"))
try:
    pd.testing.assert_frame_equal(got, checked, check_exact=False, rtol=1e-12)
except AssertionError as exc:
    out["diffs"].append(["adbc", "isvalid", str(exc)])
# A failure part-way, its traceback kept (as a notebook keeps the last one): the read-ahead
# thread must be gone all the same.
import threading
from analysis_lib.regions import core
real_add, calls = core.Totals.add, []
def failing(self, *args):
    calls.append(1)
    if len(calls) == 3:
        raise KeyboardInterrupt
    return real_add(self, *args)
core.Totals.add = failing
try:
    summarize_by_zip("MA", strategy=Sweep(chunk_size=20, engine="adbc"))
except KeyboardInterrupt as exc:
    kept = exc
core.Totals.add = real_add
out["threads_left"] = [t.name for t in threading.enumerate() if t.name == "sweep-read"]
out["interrupted"] = kept.__traceback__ is not None and len(calls) == 3
print(json.dumps(out))
"""


def test_both_engines_and_chunk_sizes_give_the_stock_answer(tmp_path):
    from tests.fresh import run_json
    from tests.per_zip_fixtures import make_database_file

    pytest.importorskip("adbc_driver_sqlite")
    url = make_database_file(tmp_path / "engines.sqlite3", seed=5, n=400)
    seen = run_json(_ENGINES_SCRIPT.format(), database_url=url)
    assert seen["n"] > 50 and 0 < seen["filtered_n"] < seen["n"]
    assert 0 < seen["valid_n"] < seen["n"]
    assert seen["diffs"] == []
    assert seen["interrupted"] and seen["threads_left"] == []
    # Every pass met the compressed blobs (about a third) and had SpatiaLite convert them.
    assert all(n >= 100 for n in seen["converted"].values()), seen["converted"]


def test_read_ahead_thread_hands_over_batches_errors_and_stops_when_closed():
    import threading

    from analysis_lib.regions._blobs import prefetched

    def source(n, fail=None):
        items = iter(range(n))

        def read_next():
            value = next(items)
            if value == fail:
                raise OSError(f"disk gone at {value}")
            return value

        return read_next

    assert list(prefetched(source(5))) == [0, 1, 2, 3, 4]
    with pytest.raises(OSError, match="disk gone at 3"):
        list(prefetched(source(10, fail=3)))
    reader = prefetched(source(1000), depth=2)
    assert next(reader) == 0
    reader.close()  # the caller stopped early: the thread stops too
    assert not [t for t in threading.enumerate() if t.name == "sweep-read"]


def test_category_codes_free_text_grows_choices_do_not():
    from analysis_lib.regions._blobs import codes_of
    from analysis_lib.regions.core import FixedVocabulary

    free: dict = {}
    assert codes_of(["b", None, "a", float("nan"), "b"], free).tolist() == [0, -1, 1, -1, 0]
    assert codes_of(["c", "a"], free).tolist() == [2, 1]
    assert free == {"b": 0, "a": 1, "c": 2}
    choices = FixedVocabulary({"oak": 0, "elm": 1})
    assert codes_of(["elm", "pine", None, "oak"], choices).tolist() == [1, -1, -1, 0]
    assert choices == {"oak": 0, "elm": 1}
