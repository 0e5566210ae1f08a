"""analysis_lib.db.backends.spatialite: SpatiaLite on a Python whose sqlite3 can't load extensions.

The fallback is exercised three ways: ``choose_dbapi`` on fake modules (every branch), a fresh
process in which Python's ``sqlite3`` is replaced by one without ``enable_load_extension``
(Django then migrates and queries a SpatiaLite file through ``pysqlite3``), and for real under
pyenv's Python 3.13 (CI's third leg, ``make test-newest``), where the whole suite runs on it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from analysis_lib.db.backends.spatialite import base
from tests.backends import requires_spatialite
from tests.fresh import run_json, run_python

ROOT = Path(__file__).resolve().parent.parent
HAS_PYSQLITE3 = importlib.util.find_spec("pysqlite3") is not None
requires_pysqlite3 = pytest.mark.skipif(
    not HAS_PYSQLITE3,
    reason="pysqlite3 is not installed (pip install 'analysis-lib[spatialite]', Linux x86_64)",
)


class _WithExtensions:
    def enable_load_extension(self, enabled: bool) -> None: ...


class _WithoutExtensions:
    pass


def _fake_dbapi(name: str, connection: type) -> types.ModuleType:
    module = types.ModuleType(name)
    module.Connection = connection
    module.sqlite_version = "3.40.1"
    return module


def _importer(found: types.ModuleType | None):
    def import_module(name: str) -> types.ModuleType:
        assert name == "pysqlite3.dbapi2"
        if found is None:
            raise ModuleNotFoundError("No module named 'pysqlite3'")
        return found

    return import_module


def test_python_sqlite3_is_kept_when_it_loads_extensions():
    stdlib = _fake_dbapi("sqlite3", _WithExtensions)
    fallback = _fake_dbapi("pysqlite3.dbapi2", _WithExtensions)
    assert base.choose_dbapi(stdlib, _importer(fallback)) is stdlib


def test_pysqlite3_is_used_when_python_sqlite3_cannot_load_extensions():
    stdlib = _fake_dbapi("sqlite3", _WithoutExtensions)
    fallback = _fake_dbapi("pysqlite3.dbapi2", _WithExtensions)
    assert base.choose_dbapi(stdlib, _importer(fallback)) is fallback


@pytest.mark.parametrize(
    ("fallback", "says"),
    [
        (None, "pysqlite3, is not installed (No module named 'pysqlite3')"),
        (
            _fake_dbapi("pysqlite3.dbapi2", _WithoutExtensions),
            "but cannot load extensions either",
        ),
    ],
    ids=["no-pysqlite3", "pysqlite3-without-extensions"],
)
def test_neither_loading_extensions_is_a_clear_error(fallback, says):
    stdlib = _fake_dbapi("sqlite3", _WithoutExtensions)
    if fallback is not None:
        fallback.__file__ = "/site-packages/pysqlite3/dbapi2.py"
    with pytest.raises(ImproperlyConfigured) as error:
        base.choose_dbapi(stdlib, _importer(fallback))
    message = str(error.value)
    assert says in message
    assert sys.executable in message and "SQLite 3.40.1" in message
    assert "pip install 'analysis-lib[spatialite]'" in message
    assert "postgis://" in message


def test_can_load_extensions_reads_the_connection_class():
    assert base.can_load_extensions(_fake_dbapi("x", _WithExtensions))
    assert not base.can_load_extensions(_fake_dbapi("x", _WithoutExtensions))


def test_wrap_keeps_a_module_that_has_getlimit():
    if not hasattr(sqlite3.Connection, "getlimit"):
        pytest.skip("this Python's sqlite3 has no Connection.getlimit (Python < 3.11)")
    assert base.wrap_dbapi(sqlite3) is sqlite3


@requires_pysqlite3
def test_wrapped_pysqlite3_has_what_django_6_uses_from_sqlite3():
    import pysqlite3.dbapi2

    wrapped = base.wrap_dbapi(pysqlite3.dbapi2)
    if wrapped is pysqlite3.dbapi2:
        pytest.skip("this pysqlite3 has Connection.getlimit itself")
    assert wrapped.dbapi2 is wrapped
    assert wrapped.SQLITE_LIMIT_VARIABLE_NUMBER == sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
    assert wrapped.sqlite_version_info == pysqlite3.dbapi2.sqlite_version_info
    assert wrapped.Cursor is pysqlite3.dbapi2.Cursor
    conn = wrapped.connect(":memory:")
    try:
        options = {row[0] for row in conn.execute("PRAGMA compile_options")}
        for constant, option in [
            ("SQLITE_LIMIT_VARIABLE_NUMBER", "MAX_VARIABLE_NUMBER"),
            ("SQLITE_LIMIT_COLUMN", "MAX_COLUMN"),
        ]:
            listed = [o for o in options if o.startswith(option + "=")]
            expected = int(listed[0].split("=")[1]) if listed else base._DEFAULT_LIMITS[option]
            assert conn.getlimit(getattr(wrapped, constant)) == expected
        with pytest.raises(wrapped.ProgrammingError, match="category"):
            conn.getlimit(999)
        # the limit is real: one more variable than it allows is refused
        limit = conn.getlimit(wrapped.SQLITE_LIMIT_VARIABLE_NUMBER)
        if limit <= 300_000:
            with pytest.raises(wrapped.OperationalError, match="too many SQL variables"):
                conn.execute("SELECT " + ",".join(["?"] * (limit + 1)), [0] * (limit + 1))
    finally:
        conn.close()


@requires_spatialite
@pytest.mark.django_db
def test_the_configured_connection_loads_spatialite_through_the_rule():
    """Python's sqlite3 where it loads extensions, else pysqlite3: whichever Python runs this."""
    from django.db import connection

    connection.ensure_connection()
    if base.can_load_extensions(sqlite3):
        assert connection.Database.__name__ in {"sqlite3", "sqlite3.dbapi2"}
    else:
        assert connection.Database.__name__.startswith("pysqlite3.dbapi2")
    assert isinstance(connection.connection, connection.Database.Connection)
    with connection.cursor() as cursor:
        cursor.execute("SELECT spatialite_version(), AsText(GeomFromText('POINT(1 2)', 4326))")
        version, point = cursor.fetchone()
    assert version and point == "POINT(1 2)"
    assert connection.features.max_query_params >= 999


# A fresh process whose sqlite3 cannot load extensions, like pyenv's, python.org's and Homebrew's:
# the same module with a Connection class that has no enable_load_extension.
NO_EXTENSIONS = """
import sqlite3, sys, types
crippled = types.ModuleType("sqlite3")
crippled.__dict__.update({k: v for k, v in vars(sqlite3).items() if not k.startswith("__")})
crippled.Connection = type("Connection", (), {})
sys.modules["sqlite3"] = crippled
"""

MIGRATE_AND_QUERY = """
import django
import sys
django.setup()
from django.core.management import call_command
from django.db import connection
from django.contrib.gis.geos import MultiPolygon, Point, Polygon
call_command("migrate", verbosity=0)
from project.buildings.models import ZipCode
box = Polygon.from_bbox((-71.2, 42.2, -71.0, 42.4))
ZipCode.objects.create(code="02101", state="MA", boundary=MultiPolygon(box))
inside = ZipCode.objects.filter(boundary__contains=Point(-71.1, 42.3)).count()
outside = ZipCode.objects.filter(boundary__contains=Point(-70.0, 42.3)).count()
django_sqlite = sys.modules["django.db.backends.sqlite3.base"].Database
print(connection.Database.__name__, django_sqlite.__name__, sys.modules["sqlite3"] is crippled,
      inside, outside)
"""


def _run_without_extensions(tmp_path: Path, extra: str = "") -> subprocess.CompletedProcess[str]:
    return run_python(
        NO_EXTENSIONS + extra + textwrap.dedent(MIGRATE_AND_QUERY),
        settings="project.settings",
        database_url=f"spatialite:///{tmp_path / 'fallback.sqlite3'}",
        timeout=300,
        check=False,
    )


@pytest.mark.slow
@requires_pysqlite3
def test_django_migrates_and_queries_spatialite_on_pysqlite3_when_sqlite3_cannot(tmp_path):
    out = _run_without_extensions(tmp_path)

    assert out.returncode == 0, out.stderr
    module, django_module, restored, inside, outside = out.stdout.split()
    # Django's SQLite backend runs on pysqlite3 (the copy with getlimit, or pysqlite3 itself)
    assert module == django_module
    assert module.startswith("pysqlite3.dbapi2")
    # only Django's SQLite backend was bound to pysqlite3: the process keeps its own sqlite3
    assert restored == "True"
    assert (inside, outside) == ("1", "0")


@pytest.mark.slow
def test_no_sqlite_that_loads_extensions_stops_with_what_to_install(tmp_path):
    hide_pysqlite3 = 'sys.modules["pysqlite3"] = None\nsys.modules["pysqlite3.dbapi2"] = None\n'
    out = _run_without_extensions(tmp_path, hide_pysqlite3)

    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: SpatiaLite needs")
    assert "pip install 'analysis-lib[spatialite]'" in last_line


# mod_spatialite keeps one pointer to the SQLite API of whichever SQLite loaded it last: two SQLite
# builds (Python's and pysqlite3's) loading it in one process break each other. So the pysqlite3
# checks run in a fresh process, and the in-process ones use Python's sqlite3 only.
TRIGGERS = """
import json, sys
if sys.argv[1] == "pysqlite3":
    import pysqlite3.dbapi2 as dbapi
else:
    import sqlite3 as dbapi
from analysis_lib.db.backends.spatialite.base import repair_iso_metadata_triggers

conn = dbapi.connect(":memory:")
conn.enable_load_extension(True)
conn.load_extension("mod_spatialite")
conn.execute("SELECT InitSpatialMetaDataFull(1)")
conn.execute("PRAGMA legacy_alter_table = OFF")  # as Django sets it
conn.execute("CREATE TABLE old_name (x)")


def rename():
    try:
        conn.execute("ALTER TABLE old_name RENAME TO new_name")
    except dbapi.OperationalError as exc:
        return str(exc)
    conn.execute("ALTER TABLE new_name RENAME TO old_name")
    return "ok"


def triggers():
    return dict(conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE name LIKE 'ISO_metadata_reference_row_id%'"
    ).fetchall())


out = {"rename_before": rename(), "before": triggers()}
out["repaired"] = repair_iso_metadata_triggers(conn.cursor())
out["rename_after"] = rename()
out["after"] = triggers()
try:
    conn.execute(
        "INSERT INTO ISO_metadata_reference (reference_scope, table_name, column_name,"
        " row_id_value, md_file_id) VALUES ('table', 'x', '', 5, 0)"
    )
    out["kept_check"] = "no error"
except dbapi.IntegrityError as exc:
    out["kept_check"] = str(exc)
out["again"] = repair_iso_metadata_triggers(conn.cursor())
print(json.dumps(out))
"""


def _triggers(module: str) -> dict:
    return run_json(TRIGGERS, module, timeout=120)


@requires_pysqlite3
def test_iso_metadata_triggers_are_repaired_where_sqlite_cannot_compile_them():
    """pysqlite3's SQLite (3.51) rejects SpatiaLite 5.0's trigger; the repair fixes renames."""
    out = _triggers("pysqlite3")
    if out["rename_before"] == "ok":
        pytest.skip("this SQLite/SpatiaLite pair compiles the ISO-metadata triggers")
    assert "no such column: rowid" in out["rename_before"]
    assert len(out["before"]) == 2
    assert sorted(out["repaired"]) == sorted(out["before"])
    assert out["rename_after"] == "ok"
    for name, sql in out["after"].items():
        assert "SELECT rowid FROM" not in sql
        assert sql.startswith(f"CREATE TRIGGER '{name}'")
    assert "row_id_value must be 0" in out["kept_check"]  # the first check is kept, and fires
    assert out["again"] == []  # idempotent


@requires_spatialite
def test_iso_metadata_triggers_are_left_alone_where_sqlite_compiles_them():
    if not base.can_load_extensions(sqlite3):
        pytest.skip("this Python's sqlite3 cannot load extensions")
    out = _triggers("sqlite3")
    if out["rename_before"] != "ok":
        pytest.skip("this Python's SQLite rejects SpatiaLite 5.0's ISO-metadata triggers")
    assert out["repaired"] == [] and out["after"] == out["before"] and len(out["before"]) == 2


# Two SQLite builds in one process, each with SpatiaLite: Python's (or pysqlite3's, as Django
# uses) and the ADBC driver's own. With the same mod_spatialite file, the second load swaps the
# library's SQLite API pointer under the first (a segmentation fault in InitSpatialMetaDataFull on
# this machine); with private_spatialite()'s copy each keeps its own.
TWO_SQLITES = """
from analysis_lib.db.backends.spatialite.base import Database
import adbc_driver_sqlite.dbapi
from analysis_lib.db.spatialite import private_spatialite

first = Database.connect(":memory:")
first.enable_load_extension(True)
first.load_extension("mod_spatialite")
second = adbc_driver_sqlite.dbapi.connect(":memory:")
second.enable_load_extension(True)
path, entry_point = private_spatialite()
second.load_extension(path, entrypoint=entry_point)
assert private_spatialite() == (path, entry_point)  # one copy per process
first.execute("SELECT InitSpatialMetaDataFull(1)")
tables = first.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
area = first.execute("SELECT Area(GeomFromText('POLYGON((0 0,2 0,2 2,0 2,0 0))'))").fetchone()[0]
cursor = second.cursor()
cursor.execute("SELECT AsText(GeomFromText('POINT(1 2)', 4326)), sqlite_version()")
point, version = cursor.fetchone()
print(tables > 100, area, point, version != first.execute("SELECT sqlite_version()").fetchone()[0])
"""


@requires_spatialite
@pytest.mark.skipif(
    importlib.util.find_spec("adbc_driver_sqlite") is None,
    reason="adbc-driver-sqlite not installed",
)
def test_a_second_sqlite_gets_its_own_spatialite_copy():
    out = run_python(TWO_SQLITES, settings="project.settings", timeout=120)
    assert out.stdout.split() == ["True", "4.0", "POINT(1", "2)", "True"]


def test_private_spatialite_names_the_missing_library():
    from analysis_lib.db.spatialite import private_spatialite

    with pytest.raises(FileNotFoundError, match="SPATIALITE_LIBRARY_PATH"):
        private_spatialite("no_such_spatialite_library")


# The same, through the library: an ADBC read (the loaders' second connection), then SpatiaLite
# calls on Django's own connection in the same process.
ADBC_THEN_DJANGO = """
import django, os, sys
django.setup()
from django.core.management import call_command
from django.db import connection
call_command("migrate", verbosity=0)
from analysis_lib import read_frame
from project.buildings.models import ZipCode
frame = read_frame(ZipCode.objects.all(), ["id", "boundary"], engine="adbc")
with connection.cursor() as cursor:
    cursor.execute("SELECT InitSpatialMetaDataFull(1)")
    cursor.execute("SELECT Area(GeomFromText('POLYGON((0 0,2 0,2 2,0 2,0 0))'))")
    print(len(frame), cursor.fetchone()[0])
"""


@requires_spatialite
@pytest.mark.skipif(
    importlib.util.find_spec("adbc_driver_sqlite") is None,
    reason="adbc-driver-sqlite not installed",
)
def test_spatialite_on_djangos_connection_survives_an_adbc_read(tmp_path):
    out = run_python(
        ADBC_THEN_DJANGO,
        settings="project.settings",
        database_url=f"spatialite:///{tmp_path / 'db.sqlite3'}",
        timeout=180,
    )
    assert out.stdout.split() == ["0", "4.0"]
