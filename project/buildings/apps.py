from django.apps import AppConfig


class BuildingsConfig(AppConfig):
    name = "project.buildings"
    label = "buildings"
    verbose_name = "Buildings by ZIP code"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # shapely must be imported before the first SpatiaLite connection. SQLite loads
        # mod_spatialite with dlopen(RTLD_GLOBAL), which puts the system GEOS (3.11 on Debian 12)
        # in the global symbol scope; a shapely imported after that binds its GEOS calls to the
        # system library instead of its own bundled GEOS (3.14), mixing two GEOS versions in one
        # process: "WKB output dimension must be 2 or 3" errors, then heap corruption
        # ("free(): invalid pointer"). Imported here, during django.setup(), it binds to its own.
        import shapely  # noqa: F401

        # Registers the index-aware spatial lookups (`within_indexed`, `bboverlaps_indexed`).
        from . import lookups  # noqa: F401
