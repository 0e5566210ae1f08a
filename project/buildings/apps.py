import ctypes
import importlib.util
from pathlib import Path

from django.apps import AppConfig


def bind_bundled_geo_libraries() -> None:
    """Load the GEOS, PROJ and GDAL bundled in shapely, pyproj and pyogrio before SpatiaLite's.

    SQLite loads ``mod_spatialite`` with ``dlopen(RTLD_GLOBAL)``, which puts the system GEOS,
    PROJ and SQLite libraries (GEOS 3.11, PROJ 9.1 on Debian 12) in the process's global symbol
    scope. A wheel-bundled library loaded after that binds its calls to those system symbols
    instead of its own copy: shapely (GEOS 3.14) then fails with "WKB output dimension must be 2
    or 3" and corrupts the heap ("free(): invalid pointer"), pyproj reports PROJ 9.1.1 and
    segfaults at exit, pyogrio's GDAL uses the system GEOS and segfaults. Loaded first, each binds
    to its own copy, and the later ``mod_spatialite`` still binds to the system libraries.
    """
    import pyproj  # noqa: F401  (PROJ, and the SQLite pyproj bundles)
    import shapely  # noqa: F401  (GEOS)

    # pyogrio (geopandas' I/O engine, optional) is slow to import (it imports pandas); loading
    # its bundled GDAL with ctypes is enough to bind it first, and costs a few milliseconds.
    spec = importlib.util.find_spec("pyogrio")
    if spec is not None and spec.origin is not None:
        libs = Path(spec.origin).parent.parent / "pyogrio.libs"
        for library in sorted(libs.glob("libgdal*.so*")):
            ctypes.CDLL(str(library))


class BuildingsConfig(AppConfig):
    name = "project.buildings"
    label = "buildings"
    verbose_name = "Buildings by ZIP code"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Before any database connection (see the function's docstring).
        bind_bundled_geo_libraries()

        # Registers the index-aware spatial lookups (`within_indexed`, `bboverlaps_indexed`).
        from . import lookups  # noqa: F401
