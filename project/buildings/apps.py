from django.apps import AppConfig


class BuildingsConfig(AppConfig):
    """The demo app: ZIP codes and buildings.

    Its spatial lookups (``within_indexed``, ``bboverlaps_indexed``) and the early loading of
    shapely's GEOS come from the ``analysis_lib`` app, listed before it in ``INSTALLED_APPS``.
    """

    name = "project.buildings"
    label = "buildings"
    verbose_name = "Buildings by ZIP code"
    default_auto_field = "django.db.models.BigAutoField"
