"""The backend's ``DatabaseWrapper``: GeoDjango's, on an SQLite that can load ``mod_spatialite``.

Django's SQLite backend binds its DB-API module once, at import (``from sqlite3 import dbapi2 as
Database`` and ``import sqlite3`` in its submodules). When Python's ``sqlite3`` cannot load
extensions, this module imports Django's SQLite and SpatiaLite backend modules while
``sys.modules["sqlite3"]`` points at ``pysqlite3`` (wrapped so that it offers what Django 6 also
uses from ``sqlite3``: ``Connection.getlimit`` and the ``SQLITE_LIMIT_*`` constants), then puts
the real ``sqlite3`` back: only Django's SQLite backend runs on ``pysqlite3``; every other user
of ``sqlite3`` in the process keeps Python's own.
"""

from __future__ import annotations

import importlib
import re
import sqlite3
import sys
import types
from collections.abc import Callable
from types import ModuleType
from typing import Any

from django.core.exceptions import ImproperlyConfigured

_DJANGO_SQLITE = "django.db.backends.sqlite3.base"
_DJANGO_SPATIALITE = "django.contrib.gis.db.backends.spatialite.base"
FALLBACK = "pysqlite3.dbapi2"


def can_load_extensions(dbapi: ModuleType) -> bool:
    """Whether connections of this DB-API module (``sqlite3`` or alike) can load extensions.

    Parameters
    ----------
    dbapi : module
        ``sqlite3``, ``sqlite3.dbapi2``, ``pysqlite3.dbapi2`` or a module like them.

    Returns
    -------
    bool
        ``True`` when its ``Connection`` has ``enable_load_extension`` (CPython leaves it out
        when built without ``--enable-loadable-sqlite-extensions``).
    """
    return hasattr(dbapi.Connection, "enable_load_extension")


def _no_extensions_message(stdlib: ModuleType, fallback_error: str) -> str:
    return (
        f"SpatiaLite needs an SQLite that can load extensions (mod_spatialite). This Python "
        f"({sys.executable}, SQLite {stdlib.sqlite_version}) was built without extension "
        f"loading in its sqlite3 module, and the fallback, pysqlite3, {fallback_error}. "
        "Install it with: pip install 'analysis-lib[spatialite]' (the pysqlite3-binary wheel, "
        "Linux x86_64), or pysqlite3 built against your SQLite; or use a Python whose sqlite3 "
        "can load extensions (Debian/Ubuntu's /usr/bin/python3, conda-forge's python); or use "
        "PostGIS (DATABASE_URL=postgis://user@host/dbname)."
    )


def choose_dbapi(
    stdlib: ModuleType = sqlite3,
    import_module: Callable[[str], ModuleType] = importlib.import_module,
) -> ModuleType:
    """Return the DB-API module SpatiaLite connections use in this process.

    Parameters
    ----------
    stdlib : module, default ``sqlite3``
        Python's own ``sqlite3`` (a parameter so that tests can pass one without extensions).
    import_module : callable, default ``importlib.import_module``
        Imports the fallback, ``pysqlite3.dbapi2``.

    Returns
    -------
    module
        ``stdlib`` when it can load extensions, else ``pysqlite3.dbapi2``.

    Raises
    ------
    django.core.exceptions.ImproperlyConfigured
        When neither can load extensions; the message says what to install.

    Examples
    --------
    >>> from analysis_lib.db.backends.spatialite.base import choose_dbapi
    >>> choose_dbapi().__name__ in {"sqlite3", "pysqlite3.dbapi2"}
    True
    """
    if can_load_extensions(stdlib):
        return stdlib
    try:
        fallback = import_module(FALLBACK)
    except ImportError as exc:
        raise ImproperlyConfigured(
            _no_extensions_message(stdlib, f"is not installed ({exc})")
        ) from None
    if not can_load_extensions(fallback):
        raise ImproperlyConfigured(
            _no_extensions_message(
                stdlib, f"is installed ({fallback.__file__}) but cannot load extensions either"
            )
        )
    return fallback


def _compile_limit(connection: Any, option: str) -> int:
    """Return a ``MAX_...`` compile-time limit of the connection's SQLite (its run-time default)."""
    prefix = option + "="
    for (entry,) in connection.execute("PRAGMA compile_options"):
        if entry.startswith(prefix):
            return int(entry[len(prefix) :], 0)
    raise NotImplementedError(f"SQLite does not report {option} in PRAGMA compile_options")


# SQLite's default limits (sqliteLimit.h), for a build that does not list them.
_DEFAULT_LIMITS = {"MAX_VARIABLE_NUMBER": 32766, "MAX_COLUMN": 2000}
_LIMITS = {
    getattr(sqlite3, name): "MAX_" + name.removeprefix("SQLITE_LIMIT_")
    for name in dir(sqlite3)
    if name.startswith("SQLITE_LIMIT_")
}


def wrap_dbapi(dbapi: ModuleType) -> ModuleType:
    """Return ``pysqlite3.dbapi2`` with what Django also uses from ``sqlite3`` (a copy if needed).

    pysqlite3 0.5 has no ``Connection.getlimit`` and no ``SQLITE_LIMIT_*`` constants, which
    Django 6's SQLite backend calls (``features.max_query_params``). The copy adds the constants
    (taken from Python's ``sqlite3``: SQLite's own numbers) and makes ``connect()`` return a
    ``Connection`` whose ``getlimit`` reads the limit from ``PRAGMA compile_options``.

    Parameters
    ----------
    dbapi : module
        ``pysqlite3.dbapi2``.

    Returns
    -------
    module
        The module itself when its ``Connection`` has ``getlimit``, else the copy, named
        ``<dbapi>.for_django``, with ``dbapi2`` pointing at itself like ``sqlite3``'s.
    """
    if hasattr(dbapi.Connection, "getlimit"):
        return dbapi

    class Connection(dbapi.Connection):  # type: ignore[name-defined,misc]
        """``pysqlite3.dbapi2.Connection`` with ``getlimit`` (compile-time limits)."""

        def getlimit(self, category: int) -> int:
            """Return the limit ``category`` (an ``SQLITE_LIMIT_*`` constant) of this connection."""
            if category not in _LIMITS:
                raise dbapi.ProgrammingError(f"'category' is out of bounds: {category!r}")
            try:
                return _compile_limit(self, _LIMITS[category])
            except NotImplementedError:
                if _LIMITS[category] in _DEFAULT_LIMITS:
                    return _DEFAULT_LIMITS[_LIMITS[category]]
                raise

    def connect(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("factory", Connection)
        return dbapi.connect(*args, **kwargs)

    connect.__doc__ = dbapi.connect.__doc__
    wrapped = types.ModuleType(dbapi.__name__ + ".for_django", dbapi.__doc__)
    wrapped.__dict__.update(
        {k: v for k, v in vars(dbapi).items() if not k.startswith("__") or k == "__all__"}
    )
    for name in dir(sqlite3):
        if name.startswith("SQLITE_LIMIT_") and not hasattr(wrapped, name):
            setattr(wrapped, name, getattr(sqlite3, name))
    wrapped.Connection = Connection
    wrapped.connect = connect
    wrapped.dbapi2 = wrapped
    return wrapped


def _import_django_backend(dbapi: ModuleType) -> ModuleType:
    """Import GeoDjango's SpatiaLite ``base`` module with Django's SQLite bound to ``dbapi``."""
    loaded = sys.modules.get(_DJANGO_SQLITE)
    if dbapi is sqlite3 or loaded is not None:
        if loaded is not None and not can_load_extensions(loaded.Database):
            raise ImproperlyConfigured(
                f"{_DJANGO_SQLITE} was imported with Python's sqlite3, which cannot load "
                "extensions, before analysis_lib.db.backends.spatialite could bind it to "
                "pysqlite3: use analysis_lib.db.backends.spatialite as the ENGINE of every "
                "SQLite database in DATABASES, and do not import Django's SQLite backend "
                "before Django's connections are set up."
            )
        return importlib.import_module(_DJANGO_SPATIALITE)
    shim = wrap_dbapi(dbapi)
    saved = {name: sys.modules.get(name) for name in ("sqlite3", "sqlite3.dbapi2")}
    sys.modules["sqlite3"] = shim
    sys.modules["sqlite3.dbapi2"] = shim
    try:
        return importlib.import_module(_DJANGO_SPATIALITE)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


Database = choose_dbapi()
_gis = _import_django_backend(Database)


# SpatiaLite 5.0's InitSpatialMetaDataFull() (what GeoDjango runs on a new database) creates two
# triggers on ISO_metadata_reference whose second check reads the rowid of a subquery. Recent
# SQLite has none ("no such column: rowid": pysqlite3-binary's 3.51.1 rejects it, Debian 12's
# 3.40.1 accepts it), and since ALTER TABLE ... RENAME re-checks
# every trigger of the schema, each migration that rebuilds a table then fails. That check never
# looked at the named table anyway; the repair drops it and keeps the first one.
_BROKEN_CHECK = re.compile(
    r"SELECT RAISE\(ROLLBACK, '(?:[^']|'')*'\)\s*WHERE NEW\.reference_scope IN \('row','row/col'\)"
    r" AND NOT EXISTS\s*\(SELECT rowid FROM \(SELECT NEW\.table_name AS table_name\)"
    r" WHERE rowid = NEW\.row_id_value\);\s*"
)


def repair_iso_metadata_triggers(cursor: Any) -> list[str]:
    """Make SpatiaLite 5.0's ISO-metadata triggers compile on recent SQLite (see above).

    Parameters
    ----------
    cursor : DB-API cursor
        A cursor on a SpatiaLite database (Django's or a raw one).

    Returns
    -------
    list of str
        The names of the triggers rewritten: none when this SQLite still compiles them, or
        when the database has none of them.
    """
    # A constant in the SQL, no parameters: the call works on Django's cursor (%s) and on a raw
    # DB-API one (?) alike.
    cursor.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
        "AND instr(sql, 'SELECT rowid FROM (SELECT NEW.table_name AS table_name)') > 0"
    )
    broken = cursor.fetchall()
    if not broken:
        return []
    try:
        cursor.execute("SELECT rowid FROM (SELECT 1)")
        cursor.fetchall()
        return []  # this SQLite still reads a subquery's rowid: the triggers work as they are
    except Exception:  # noqa: BLE001 - the driver's OperationalError, wrapped or not
        pass
    repaired = []
    for name, sql in broken:
        fixed = _BROKEN_CHECK.sub("", sql)
        if fixed == sql:
            continue  # not the shape SpatiaLite 5.0 writes: leave it alone
        cursor.execute('DROP TRIGGER "{}"'.format(name.replace('"', '""')))
        cursor.execute(fixed)
        repaired.append(name)
    return repaired


class DatabaseWrapper(_gis.DatabaseWrapper):
    """GeoDjango's SpatiaLite ``DatabaseWrapper``, on ``pysqlite3`` where ``sqlite3`` can't.

    ``DatabaseWrapper.Database`` is the DB-API module its connections come from: ``sqlite3``,
    or the ``pysqlite3`` copy of :func:`wrap_dbapi`. ``prepare_database()`` (run by
    ``migrate``) also repairs SpatiaLite 5.0's ISO-metadata triggers where this SQLite cannot
    compile them (:func:`repair_iso_metadata_triggers`).
    """

    def prepare_database(self) -> None:
        """Initialise the spatial metadata like GeoDjango, then repair the ISO triggers."""
        super().prepare_database()
        with self.cursor() as cursor:
            repair_iso_metadata_triggers(cursor)
