"""Plain helpers shared by the tests: the project root, and the generated database on disk.

The ``generated_db`` fixture itself lives in ``tests/conftest.py``; this module holds what it
returns and the ``manage.py`` runner it uses. Why it exists: pytest-django's test database
(in memory on SpatiaLite) is invisible to a Jupyter kernel or a ``manage.py`` subprocess, so the
notebook, shell_plus and Dask tests share a real one: a SpatiaLite file under pytest's temporary
folder, or, when ``DATABASE_URL`` points at PostGIS, a scratch database on that server (dropped
at the end). It is made once per session with ``manage.py migrate`` and
``manage.py generate_massachusetts``; subprocesses find it through
``DATABASE_URL`` in their environment.

Tests ask for it by name (``def test_x(generated_db): ...``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUILDINGS = 3000
SEED = 11
STATE = "MA"

POSTGRES_SCHEMES = ("postgis://", "postgres://", "postgresql://")


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
    from tests.fresh import run_python

    manage_py = PROJECT_ROOT / "manage.py"
    proc = run_python(manage_py, *args, database_url=url, timeout=timeout, check=False)
    if proc.returncode:
        pytest.fail(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


_COUNT = (
    "import json; from project.buildings.models import ZipCode, Building; "
    "print(json.dumps({'zips': ZipCode.objects.filter(state=%r).count(), "
    "'buildings': Building.objects.count(), "
    "'states': sorted(set(ZipCode.objects.values_list('state', flat=True)))}))"
)


def postgres_scratch(url: str) -> tuple[str, object]:
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


def build_generated_db(url: str) -> GeneratedDB:
    """Migrate the empty database at ``url`` and fill it; return what it holds."""
    import json

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
    return GeneratedDB(url, counts["zips"], counts["buildings"], tuple(counts["states"]))
