"""Django settings for the per-ZIP building analysis project.

The database comes from ``DATABASE_URL`` (parsed by dj-database-url):

* unset: the embedded SpatiaLite file ``data/buildings.sqlite3``;
* ``spatialite:///path/to/file.sqlite3``: another SpatiaLite file;
* ``postgis://user:password@host:port/dbname``: a PostGIS server.

SpatiaLite runs on ``analysis_lib.db.backends.spatialite``: GeoDjango's SpatiaLite backend, on
``pysqlite3`` when this Python's ``sqlite3`` cannot load extensions (pyenv, python.org and
Homebrew builds; docs/install.md).
"""

import os
import re
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = BASE_DIR / "data"
NOTEBOOKS_DIR = BASE_DIR / "notebooks"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "analysis-only-not-a-web-service")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS: list[str] = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.gis",
    "django_extensions",
    "analysis_lib",
    "project.buildings",
]

ROOT_URLCONF = "project.urls"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DEFAULT_DATABASE_URL = f"spatialite:///{DATA_DIR / 'buildings.sqlite3'}"
DATABASE_URL = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL

ALLOWED_ENGINES = {
    "django.contrib.gis.db.backends.spatialite",
    "django.contrib.gis.db.backends.postgis",
}
SPATIALITE_ENGINE = "analysis_lib.db.backends.spatialite"
_USE = "use spatialite:///path/to/file.sqlite3 or postgis://user@host/dbname."
# For error messages: the URL with its password (if any) replaced by ***.
_SHOWN_URL = re.sub(r"^([\w+.-]+://[^:/@]*:)[^@]*@", r"\1***@", DATABASE_URL)
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
except ValueError as exc:  # dj-database-url's UnknownSchemeError and ParseError
    raise ImproperlyConfigured(
        f"DATABASE_URL={_SHOWN_URL!r} is not a database URL this project can read ({exc}); " + _USE
    ) from None
if _db["ENGINE"] not in ALLOWED_ENGINES:
    raise ImproperlyConfigured(
        f"DATABASE_URL={_SHOWN_URL!r} selects {_db['ENGINE']!r}; this project needs a "
        "spatial database: " + _USE
    )
if not _db["NAME"]:
    raise ImproperlyConfigured(
        f"DATABASE_URL={_SHOWN_URL!r} gives no database name (a SpatiaLite file needs three "
        "slashes: spatialite:///relative/path.sqlite3 or spatialite:////absolute/path.sqlite3); "
        + _USE
    )
if _db["ENGINE"].endswith("spatialite"):
    # GeoDjango's SpatiaLite backend, on an SQLite that can load mod_spatialite on any Python.
    _db["ENGINE"] = SPATIALITE_ENGINE
    Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    _db.setdefault("OPTIONS", {})["timeout"] = 60
DATABASES = {"default": _db}

# Debian 12 ships GDAL 3.6; Django 5.2 warns (gis.W001) that it will stop
# supporting GDAL < 3.7 in a later release. Nothing here depends on newer GDAL,
# so the warning is noise for this project.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]

# django-extensions: `python manage.py shell_plus --lab` starts JupyterLab in
# notebooks/ with every model imported (the kernel is `django_extensions`).
SHELL_PLUS = "ipython"
SHELL_PLUS_PRINT_SQL = False
NOTEBOOK_ARGUMENTS = ["--notebook-dir", str(NOTEBOOKS_DIR)]
if os.geteuid() == 0:  # Jupyter refuses to run as root without it (CI runs as root).
    NOTEBOOK_ARGUMENTS.append("--allow-root")
# Jupyter runs cells in a thread with a running event loop, where Django refuses ORM calls
# unless DJANGO_ALLOW_ASYNC_UNSAFE is set; the kernels `shell_plus --lab` starts inherit this
# process's environment.
if sys.argv[1:2] == ["shell_plus"]:
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
