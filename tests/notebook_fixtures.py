"""A small generated database on disk, for tests whose code runs in another process.

pytest-django's test database (in memory on SpatiaLite) is invisible to a
Jupyter kernel or a ``manage.py`` subprocess, so the notebook and shell_plus
tests share a real one: a SpatiaLite file under pytest's temporary folder, or,
when ``DATABASE_URL`` points at PostGIS, a scratch database on that server
(dropped at the end). It is made once per session with ``manage.py migrate``
and ``manage.py generate_massachusetts``; subprocesses find it through
``DATABASE_URL`` in their environment.

Test modules use it with ``from notebook_fixtures import generated_db  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILDINGS = 3000
SEED = 11
STATE = "MA"

_POSTGRES_SCHEMES = ("postgis://", "postgres://", "postgresql://")
# One database per session even though two test modules import the fixture.
_CACHE: dict[str, GeneratedDB] = {}


@dataclass(frozen=True)
class GeneratedDB:
    """Where the generated database is and what it holds."""

    url: str
    zip_count: int
    building_count: int
    states: tuple[str, ...]

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment with DATABASE_URL pointing at the database."""
        return {**os.environ, "DATABASE_URL": self.url, **extra}


def manage(url: str, *args: str, timeout: float = 300) -> str:
    """Run ``manage.py`` with ``DATABASE_URL=url``; return stdout, fail the test on error."""
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode:
        pytest.fail(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


_COUNT = (
    "import json; from project.buildings.models import ZipCode, Building; "
    "print(json.dumps({'zips': ZipCode.objects.filter(state=%r).count(), "
    "'buildings': Building.objects.count(), "
    "'states': sorted(set(ZipCode.objects.values_list('state', flat=True)))}))"
)


def _postgres_scratch(url: str) -> tuple[str, object]:
    """Create an empty scratch database on the PostGIS server of ``url``."""
    import dj_database_url
    import psycopg
    from psycopg import sql

    cfg = dj_database_url.parse(url)
    name = f"{cfg['NAME']}_notebooks_{os.getpid()}"
    conninfo = {
        "host": cfg.get("HOST") or None,
        "port": cfg.get("PORT") or None,
        "user": cfg.get("USER") or None,
        "password": cfg.get("PASSWORD") or None,
        "dbname": cfg["NAME"],
    }
    conninfo = {k: v for k, v in conninfo.items() if v}
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop() -> None:
        with psycopg.connect(**conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    base, _, _ = url.rpartition("/")
    query = url.partition("?")[2]
    return f"{base}/{name}" + (f"?{query}" if query else ""), drop


@pytest.fixture(scope="session")
def generated_db(tmp_path_factory) -> GeneratedDB:
    """A migrated database holding a generated Massachusetts of ~3,000 buildings."""
    key = str(tmp_path_factory.getbasetemp())
    if key in _CACHE:
        yield _CACHE[key]
        return
    current = os.environ.get("DATABASE_URL", "")
    drop = None
    if current.startswith(_POSTGRES_SCHEMES):
        url, drop = _postgres_scratch(current)
    else:
        path = tmp_path_factory.mktemp("notebooks_db") / "buildings.sqlite3"
        url = f"spatialite:///{path}"
    try:
        manage(url, "migrate", "--no-input", "-v", "0")
        manage(
            url,
            "generate_massachusetts",
            "--buildings",
            str(BUILDINGS),
            "--seed",
            str(SEED),
            "--replace",
        )
        counts = json.loads(manage(url, "shell", "-c", _COUNT % STATE).strip().splitlines()[-1])
        db = GeneratedDB(url, counts["zips"], counts["buildings"], tuple(counts["states"]))
        _CACHE[key] = db
        yield db
    finally:
        _CACHE.pop(key, None)
        if drop is not None:
            drop()
