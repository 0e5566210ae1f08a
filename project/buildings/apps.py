from django.apps import AppConfig


def bind_bundled_geo_libraries() -> None:
    """Load the GEOS and PROJ bundled in shapely and pyproj before SpatiaLite loads Debian's.

    SQLite loads ``mod_spatialite`` with ``dlopen(RTLD_GLOBAL)``, which puts the system GEOS,
    PROJ and SQLite libraries (GEOS 3.11, PROJ 9.1 on Debian 12) in the process's global symbol
    scope. A wheel-bundled library loaded after that binds its calls to those system symbols
    instead of its own copy: shapely (GEOS 3.14) then fails with "WKB output dimension must be 2
    or 3" and corrupts the heap ("free(): invalid pointer"); pyproj reports PROJ 9.1.1 and
    segfaults at exit. Loaded first, each binds to its own copy, and the later
    ``mod_spatialite`` still binds to the system libraries.

    pyogrio (geopandas' file I/O, optional, unused by this project) has the same problem with
    its bundled GDAL: import it before the first database query if you need it. It is not
    preloaded here because loading its GDAL costs every process 12 MB of RSS.
    """
    import pyproj  # noqa: F401  (PROJ, and the SQLite pyproj bundles)
    import shapely  # noqa: F401  (GEOS)


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
