"""The Django app: add ``"analysis_lib"`` to ``INSTALLED_APPS`` for the index-aware lookups."""

from __future__ import annotations

from django.apps import AppConfig


def bind_bundled_geo_libraries() -> None:
    """Load the GEOS and PROJ bundled in shapely and pyproj before SpatiaLite loads the system's.

    SQLite loads ``mod_spatialite`` with ``dlopen(RTLD_GLOBAL)``, which puts the system GEOS,
    PROJ and SQLite libraries in the process's global symbol scope. A wheel-bundled library
    loaded after that binds its calls to those system symbols instead of its own copy: shapely
    then fails with "WKB output dimension must be 2 or 3" and corrupts the heap; pyproj
    segfaults at exit. Loaded first, each binds to its own copy, and the later
    ``mod_spatialite`` still binds to the system libraries. (pyogrio, geopandas' file I/O, has
    the same problem with its bundled GDAL: import it before the first database query if you
    need it; it is not preloaded because its GDAL costs every process 12 MB of RSS.)
    """
    import pyproj  # noqa: F401  (PROJ, and the SQLite pyproj bundles)
    import shapely  # noqa: F401  (GEOS)


class AnalysisLibConfig(AppConfig):
    """Registers ``within_indexed`` and ``bboverlaps_indexed`` on every geometry field.

    On SpatiaLite they put the R*Tree prefilter in front of the stock lookup; on PostGIS they
    are the stock lookups (the GiST index is used already). The app has no models. It also
    loads shapely's and pyproj's own GEOS and PROJ before SpatiaLite can load the system's.
    """

    name = "analysis_lib"
    label = "analysis_lib"
    verbose_name = "analysis_lib: per-region analysis and index-aware spatial lookups"

    def ready(self) -> None:
        """Register the lookups (importing GeoDjango only now, once the app registry is up)."""
        # Before any database connection (see the function's docstring).
        bind_bundled_geo_libraries()
        from .lookups import register

        register()
