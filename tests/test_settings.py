"""The DATABASE_URL switch in project/settings.py, the silenced gis.W001, and the PostGIS script.

Settings are read once per process, so every URL is tried in a fresh Python subprocess.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backends import BACKEND, IS_POSTGIS, requires_postgis, requires_spatialite
from tests.fresh import run_python

ROOT = Path(__file__).resolve().parent.parent
PRINT_DATABASE = (
    "import json\n"
    "from django.conf import settings\n"
    "print(json.dumps(settings.DATABASES['default'], default=str))\n"
)


def _env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env["DJANGO_SETTINGS_MODULE"] = "project.settings"
    return env


def _read_settings(database_url: str | None) -> subprocess.CompletedProcess[str]:
    return run_python(
        PRINT_DATABASE,
        env={"DATABASE_URL": database_url},  # None: no DATABASE_URL at all
        settings="project.settings",
        timeout=120,
        check=False,
    )


def _database(database_url: str | None) -> dict:
    out = _read_settings(database_url)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


SPATIALITE = "analysis_lib.db.backends.spatialite"
POSTGIS = "django.contrib.gis.db.backends.postgis"


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        (None, {"ENGINE": SPATIALITE, "NAME": str(ROOT / "data" / "buildings.sqlite3")}),
        ("", {"ENGINE": SPATIALITE, "NAME": str(ROOT / "data" / "buildings.sqlite3")}),
        ("spatialite:////tmp/x.sqlite3", {"ENGINE": SPATIALITE, "NAME": "/tmp/x.sqlite3"}),
        (
            "postgis://user:pw@localhost:5433/db",
            {
                "ENGINE": POSTGIS,
                "HOST": "localhost",
                "PORT": 5433,
                "NAME": "db",
                "USER": "user",
                "PASSWORD": "pw",
            },
        ),
        (
            "postgis://postgres@127.0.0.1/buildings",
            {"ENGINE": POSTGIS, "HOST": "127.0.0.1", "PORT": "", "NAME": "buildings"},
        ),
    ],
    ids=["unset", "empty", "spatialite-file", "postgis", "postgis-default-port"],
)
def test_database_url_selects_the_database(database_url, expected):
    db = _database(database_url)
    assert {key: db[key] for key in expected} == expected


def test_spatialite_url_creates_the_missing_parent_directory(tmp_path):
    target = tmp_path / "new" / "dir" / "x.sqlite3"

    db = _database(f"spatialite:///{target}")

    assert db["ENGINE"] == SPATIALITE
    assert db["NAME"] == str(target)
    assert target.parent.is_dir()
    assert not target.exists(), "reading the settings must not create the database file"


@pytest.mark.parametrize(
    ("database_url", "engine"),
    [
        ("sqlite:///x", "django.db.backends.sqlite3"),
        ("postgres://user@localhost/db", "django.db.backends.postgresql"),
        ("postgresql://user@localhost:5432/db", "django.db.backends.postgresql"),
        ("mysql://user@localhost/db", "django.db.backends.mysql"),
        ("mysqlgis://user@localhost/db", "django.contrib.gis.db.backends.mysql"),
    ],
)
def test_non_spatial_or_unsupported_url_is_improperly_configured(database_url, engine):
    out = _read_settings(database_url)

    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: ")
    assert f"DATABASE_URL={database_url!r}" in last_line
    assert repr(engine) in last_line
    assert "needs a spatial database" in last_line
    assert "spatialite:///" in last_line and "postgis://" in last_line


def test_error_message_does_not_echo_the_password():
    out = _read_settings("postgres://user:s3cret@localhost/db")

    last_line = out.stderr.strip().splitlines()[-1]
    assert "ImproperlyConfigured" in last_line
    assert "s3cret" not in out.stderr
    assert "postgres://user:***@localhost/db" in last_line


@pytest.mark.parametrize(
    "database_url", ["foo://x", "not a url", "postgis://u@localhost:notaport/db"]
)
def test_unparsable_url_is_improperly_configured(database_url):
    out = _read_settings(database_url)

    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: DATABASE_URL=")
    assert "spatialite:///" in last_line and "postgis://" in last_line


@pytest.mark.parametrize(
    "database_url", ["spatialite://relative.sqlite3", "postgis://user@localhost/"]
)
def test_url_without_a_database_name_is_improperly_configured(database_url):
    out = _read_settings(database_url)

    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured: DATABASE_URL=")
    assert "database name" in last_line


def test_gis_w001_is_silenced_and_manage_py_check_passes():
    from django.conf import settings
    from django.contrib.gis.checks import W001, check_gdal_39
    from django.core.checks import run_checks

    assert "gis.W001" in settings.SILENCED_SYSTEM_CHECKS
    if W001 not in check_gdal_39(None):
        pytest.skip("this GDAL is new enough that Django does not warn (gis.W001)")
    w001 = [message for message in run_checks() if message.id == "gis.W001"]
    assert w001 and all(message.is_silenced() for message in w001)

    # The same through manage.py, on whichever database this run uses.
    out = run_python(
        ROOT / "manage.py",
        "check",
        "--fail-level",
        "WARNING",
        settings="project.settings",
        timeout=120,
    )
    assert "System check identified no issues" in out.stdout
    assert "gis.W001" not in out.stdout + out.stderr


@pytest.mark.django_db
def test_the_suite_runs_on_the_configured_spatial_database():
    from django.db import connection

    expected_vendor = {"spatialite": "sqlite", "postgis": "postgresql"}[BACKEND]
    assert connection.vendor == expected_vendor
    function = "postgis_lib_version" if IS_POSTGIS else "spatialite_version"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}()")
        (version,) = cursor.fetchone()
    assert re.match(r"\d+\.\d+", version)


@requires_postgis
@pytest.mark.django_db
def test_postgis_test_database_has_the_extension():
    from django.db import connection

    assert connection.settings_dict["NAME"].startswith("test_")
    with connection.cursor() as cursor:
        cursor.execute("SELECT extname FROM pg_extension WHERE extname = 'postgis'")
        assert cursor.fetchall() == [("postgis",)]


@requires_spatialite
@pytest.mark.django_db
def test_spatialite_test_database_has_spatial_metadata():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM spatial_ref_sys WHERE srid = 4326")
        assert cursor.fetchone() == (1,)


POSTGIS_SCRIPT_PROBE = """
import json
import os
import django
from django.conf import settings
from django.db import connection

django.setup()
db = settings.DATABASES["default"]
with connection.cursor() as cursor:
    cursor.execute("SELECT postgis_lib_version(), current_setting('data_directory')")
    version, data_directory = cursor.fetchone()
probe = [os.environ["DATABASE_URL"], db["ENGINE"], db["HOST"], db["PORT"], version, data_directory]
print("PROBE " + json.dumps(probe))
raise SystemExit(3)
"""


def _probe_line(stdout: str) -> list:
    """The probe's one ``PROBE [...]`` line; any other line on stdout is ignored."""
    lines = [line for line in stdout.splitlines() if line.startswith("PROBE ")]
    assert len(lines) == 1, f"expected one PROBE line on stdout, got:\n{stdout}"
    return json.loads(lines[0].removeprefix("PROBE "))


@pytest.mark.slow
@pytest.mark.skipif(
    not Path("/usr/lib/postgresql/15/bin/initdb").exists(),
    reason="PostgreSQL 15 is not installed (scripts/postgis.sh would install it)",
)
def test_postgis_script_runs_a_command_on_a_throwaway_cluster_and_removes_it():
    out = subprocess.run(
        ["bash", "scripts/postgis.sh", "run", "--", sys.executable, "-c", POSTGIS_SCRIPT_PROBE],
        env=_env(None),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert out.returncode == 3, out.stderr  # the command's exit code, passed through
    # The script's stdout is the command's stdout; its own lines (and apt's, on a machine where
    # it installs PostGIS first) go to stderr. Read only the probe's line all the same.
    assert "[postgis]" not in out.stdout
    url, engine, host, port, version, data_directory = _probe_line(out.stdout)
    assert re.fullmatch(r"postgis://postgres@127\.0\.0\.1:\d+/buildings", url)
    assert (engine, host, str(port)) == (
        POSTGIS,
        "127.0.0.1",
        url.rsplit(":", 1)[1].split("/")[0],
    )
    assert version.startswith("3.")
    cluster_dir = Path(data_directory).parent
    assert cluster_dir.name.startswith("postgis-run.")
    assert not cluster_dir.exists(), "the throwaway cluster's directory was left behind"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", int(port)), timeout=2):
        pass  # nothing listens on the cluster's port any more


def _noisy_apt(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``apt-get`` (and ``sudo``) print dpkg-like lines on stdout.

    They install nothing: the scripts under test must route that chatter to stderr, so that
    their stdout carries only what their usage text documents.
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(
        "#!/bin/sh\n"
        'echo "Selecting previously unselected package noisy-$1."\n'
        'echo "Setting up noisy-$1 ..."\n'
    )
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = _env(None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def test_postgis_script_sends_apt_output_to_stderr(tmp_path):
    env = _noisy_apt(tmp_path)
    env["PG_VERSION"] = "99"  # no such PostgreSQL: the script "installs" it, then gives up

    out = subprocess.run(
        ["bash", "scripts/postgis.sh", "run", "--", "true"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 1
    assert out.stdout == ""
    assert "Selecting previously unselected package noisy-" in out.stderr
    assert "[postgis] installing postgresql-99-postgis-3 with apt" in out.stderr
    assert "/usr/lib/postgresql/99/bin/initdb is missing" in out.stderr


def test_bootstrap_prints_nothing_on_stdout(tmp_path):
    import hashlib

    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if not (ROOT / ".venv" / f".installed-{digest}").exists():
        pytest.skip("no up-to-date .venv here (bootstrap would reinstall the Python packages)")
    env = _noisy_apt(tmp_path)
    env["EXTRA_APT"] = "analysis-kit-no-such-package"  # dpkg -s fails: bootstrap "installs" it

    out = subprocess.run(
        ["bash", "scripts/bootstrap.sh"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    assert "noisy-" in out.stderr  # apt-get ran, and its lines went to stderr
    assert "[setup] ready: .venv" in out.stderr
