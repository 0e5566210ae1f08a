"""The sweep's ADBC read without pyarrow (nanoarrow), where ``keep_pyarrow_out()`` is in force.

In a fresh process that keeps pyarrow out, on a SpatiaLite file (ADBC cannot open the
in-memory test database): the nanoarrow reader must give exactly what the stock ORM query and
the DB-API reader give, whatever the chunk size, with NULL values, NULL geometries, compressed
and XYZ blobs, hostile string parameters bound by the driver, and SpatiaLite functions in the
WHERE; it must really be the reader that ran, and pyarrow must never be imported.
"""

from __future__ import annotations

import pytest

from tests.backends import IS_POSTGIS

pytest.importorskip("nanoarrow")
pytest.importorskip("adbc_driver_sqlite")

_SCRIPT = """
import json, sys
from analysis_lib import keep_pyarrow_out
assert keep_pyarrow_out()
import pandas as pd
from analysis_lib import Sweep, setup_django
setup_django()
from django.db import connection
from analysis_lib.regions import _chunks
from project.buildings.analysis import summarize_by_zip
from project.buildings.models import Building, ZipCode

with connection.cursor() as cursor:
    # NULL geometries and NULL category values need the NOT NULL constraints gone: SQLite's
    # documented way to drop one is to edit the schema text (writable_schema).
    cursor.execute("PRAGMA writable_schema = ON")
    cursor.execute(
        "UPDATE sqlite_master SET sql = replace(replace(sql, "
        "'\\"boundary\\" POLYGON NOT NULL', '\\"boundary\\" POLYGON NULL'), "
        "'\\"use_type\\" varchar(16) NOT NULL', '\\"use_type\\" varchar(16) NULL') "
        "WHERE name = 'buildings_building'"
    )
    cursor.execute("PRAGMA writable_schema = OFF")
connection.close()  # the new schema is read by the next connection
with connection.cursor() as cursor:
    # XYZ blobs in an XY column: SpatiaLite's type-checking triggers would refuse them.
    cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                   "AND tbl_name = 'buildings_building' AND name LIKE 'gg%'")
    for (name,) in cursor.fetchall():
        cursor.execute(f'DROP TRIGGER "{name}"')
    cursor.execute("UPDATE buildings_building SET boundary = CompressGeometry(boundary) "
                   "WHERE id % 5 = 1")
    cursor.execute("UPDATE buildings_building SET boundary = CastToXYZ(boundary) "
                   "WHERE id % 5 = 2")
    cursor.execute("UPDATE buildings_building SET boundary = NULL WHERE id % 11 = 3")
    cursor.execute("UPDATE buildings_building SET use_type = NULL WHERE id % 13 = 4")
    cursor.execute("UPDATE buildings_building SET height_m = NULL WHERE id % 7 = 5")
    cursor.execute("UPDATE buildings_building SET year_built = NULL WHERE id % 6 = 0")

nano_rows, nano_runs = [], []
real_nano = _chunks._nano_chunks
def spy(*args, **kwargs):
    nano_runs.append(1)
    for chunk in real_nano(*args, **kwargs):
        nano_rows.append(chunk.n)
        yield chunk
_chunks._nano_chunks = spy

def same(got, expected, label):
    try:  # sums in another order: equal to rounding
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)
    except AssertionError as exc:
        out["diffs"].append([label, str(exc)])

out = {"diffs": [], "nano_rows": {}}
base = summarize_by_zip("MA", strategy="orm")
out["n"] = int(base["n_buildings"].sum())
out["null_geometries"] = Building.objects.filter(boundary__isnull=True).count()
for chunk_size in (1, 7, 100000):
    dbapi = summarize_by_zip("MA", strategy=Sweep(chunk_size=chunk_size, engine="dbapi"))
    for engine in ("auto", "adbc"):
        nano_rows.clear()
        got = summarize_by_zip("MA", strategy=Sweep(chunk_size=chunk_size, engine=engine))
        out["nano_rows"][f"{engine} {chunk_size}"] = sum(nano_rows)
        same(got, base, f"{engine} {chunk_size} vs orm")
        if not got.equals(dbapi):  # the same rows in the same order: exactly equal
            out["diffs"].append([f"{engine} {chunk_size} vs dbapi", "not exactly equal"])
out["total_rows"] = Building.objects.count()

# Hostile string parameters, bound by the driver (never formatted into the SQL).
hostile = ["'; DROP TABLE buildings_building; --", "100%", "_%\\\\", 'say "hi"', "ü😀\\u2028"]
some = (
    Building.objects.exclude(source_id__in=hostile)
    .exclude(source_id__contains="%'")
    .filter(height_m__gt=4.5, year_built__gte=1950)
)
expected = summarize_by_zip("MA", some, strategy="orm")
out["hostile_n"] = int(expected["n_buildings"].sum())
nano_rows.clear()
same(summarize_by_zip("MA", some, strategy=Sweep(chunk_size=7)), expected, "hostile")
out["hostile_rows"] = sum(nano_rows)
out["hostile_expected_rows"] = some.count()

# SpatiaLite functions in the WHERE: the reader reruns the query on a connection with
# SpatiaLite loaded (the first try, without it, says "no such function").
valid = Building.objects.filter(boundary__isvalid=True, pk__gt=10)
expected = summarize_by_zip("MA", valid, strategy="orm")
out["valid_n"] = int(expected["n_buildings"].sum())
nano_rows.clear()
same(summarize_by_zip("MA", valid, strategy=Sweep(chunk_size=50)), expected, "isvalid")
out["valid_rows"] = sum(nano_rows)
out["valid_expected_rows"] = valid.count()

# A geometry parameter: ADBC cannot bind it, "auto" reads with DB-API (the same answer).
from django.contrib.gis.geos import Polygon
box = Polygon.from_bbox(ZipCode.objects.order_by("code").first().boundary.extent)
near = Building.objects.filter(boundary__intersects=box)
expected = summarize_by_zip("MA", near, strategy="orm")
out["near_n"] = int(expected["n_buildings"].sum())
runs = len(nano_runs)
same(summarize_by_zip("MA", near, strategy=Sweep(chunk_size=7)), expected, "spatial filter")
out["near_nano_runs"] = len(nano_runs) - runs
try:
    summarize_by_zip("MA", near, strategy=Sweep(engine="adbc"))
except ValueError as exc:
    out["near_adbc"] = str(exc)

# The first batch without any height: the driver types the column from it and fails on a
# later batch; "adbc" says so with the rows already read, "auto" restarts on DB-API.
from analysis_lib import EngineUnavailable
first = list(Building.objects.order_by("pk").values_list("pk", flat=True)[:50])
Building.objects.filter(pk__in=first).update(height_m=None)
dbapi = summarize_by_zip("MA", strategy=Sweep(engine="dbapi", chunk_size=50))
try:
    summarize_by_zip("MA", strategy=Sweep(engine="adbc", chunk_size=50))
except EngineUnavailable as exc:
    out["midstream_rows"] = exc.rows
nano_runs.clear()
nano_rows.clear()
auto = summarize_by_zip("MA", strategy=Sweep(engine="auto", chunk_size=50))
out["midstream_auto"] = [len(nano_runs), sum(nano_rows), bool(auto.equals(dbapi))]
out["pyarrow"] = "pyarrow" in sys.modules
print(json.dumps(out))
"""


@pytest.mark.skipif(
    IS_POSTGIS, reason="process-level test on its own SpatiaLite file; runs in the SpatiaLite pass"
)
def test_nanoarrow_reader_equals_orm_and_dbapi_without_pyarrow(tmp_path):
    from tests.fresh import run_json
    from tests.per_zip_fixtures import make_database_file

    url = make_database_file(tmp_path / "nano.sqlite3", seed=13, n=400)
    seen = run_json(_SCRIPT, database_url=url)
    assert seen["diffs"] == []
    assert seen["pyarrow"] is False  # pyarrow never imported, after every sweep above
    assert seen["n"] > 50 and seen["null_geometries"] > 10
    # Every sweep of the whole table, "auto" and "adbc", read every row through nanoarrow.
    assert seen["nano_rows"] == {
        f"{engine} {size}": seen["total_rows"]
        for size in (1, 7, 100000)
        for engine in ("auto", "adbc")
    }
    assert 0 < seen["hostile_n"] < seen["n"]
    assert seen["hostile_rows"] == seen["hostile_expected_rows"] > 0
    assert seen["valid_n"] > 0 and seen["valid_rows"] == seen["valid_expected_rows"] > 0
    assert seen["near_n"] > 0 and seen["near_nano_runs"] == 1  # refused, then DB-API
    assert "cannot be bound by ADBC" in seen["near_adbc"]
    assert seen["midstream_rows"] >= 50  # failed part-way, after the first batch
    runs, rows, equal = seen["midstream_auto"]
    assert runs == 1 and 50 <= rows < seen["total_rows"] and equal


def test_blob_buffer_keeps_its_batch_alive(tmp_path):
    # nanoarrow's buffer views do not own the driver's memory: the chunk's blob buffer must
    # keep the batch's array alive, or it reads freed (and reused) memory once it is dropped.
    import gc
    import sqlite3

    import adbc_driver_manager
    import adbc_driver_sqlite.dbapi
    import nanoarrow as na

    from analysis_lib.regions._nano import _nano_blobs, _nogil_get_next

    path = str(tmp_path / "blobs.sqlite3")
    blobs = [bytes([i % 251]) * (200 + i % 90) for i in range(3000)]
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (b BLOB)")
        db.executemany("INSERT INTO t VALUES (?)", [(b,) for b in blobs])
    db.close()
    conn = adbc_driver_sqlite.dbapi.connect(path)
    statement = adbc_driver_manager.AdbcStatement(conn.adbc_connection)
    try:
        statement.set_options(**{"adbc.sqlite.query.batch_rows": "100"})
        statement.set_sql_query("SELECT b FROM t")
        handle, _ = statement.execute_query()
        stream = na.c_array_stream(handle)
        start = 0  # rows read so far
        for read_next in (stream.get_next, _nogil_get_next(stream)):
            array = read_next()
            view = array.view()
            n = view.length
            buffer, offsets, valid = _nano_blobs(view.child(0), n, 0, array)
            del array, view
            gc.collect()
            later = [read_next() for _ in range(10)]  # the driver may reuse freed memory
            assert valid is None and sum(a.length for a in later) == 1000
            pairs = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
            got = [buffer[lo:hi].tobytes() for lo, hi in pairs]
            assert got == blobs[start : start + n]
            start += n + 1000
        stream.release()
    finally:
        statement.close()
        conn.close()


def test_nanoarrow_reads_only_where_pyarrow_cannot_be_imported(monkeypatch):
    import importlib.util

    from analysis_lib.loaders import _arrow
    from analysis_lib.regions._nano import nano_reads

    real = importlib.util.find_spec

    def without(*names):
        return lambda name, *args: None if name in names else real(name, *args)

    assert not _arrow.pyarrow_kept_out()  # this test process has pyarrow
    assert nano_reads() is False  # pyarrow importable: pyarrow's ADBC reader, as before
    monkeypatch.setattr(importlib.util, "find_spec", without("pyarrow"))
    assert nano_reads() is True  # pyarrow not installed: nanoarrow's
    monkeypatch.setattr(importlib.util, "find_spec", without("pyarrow", "nanoarrow"))
    assert nano_reads() is False  # neither: DB-API
    monkeypatch.setattr(importlib.util, "find_spec", real)
    monkeypatch.setattr(_arrow, "pyarrow_kept_out", lambda: True)
    assert nano_reads() is True  # kept out (the fresh-process test checks the real thing)
