from django.apps import AppConfig


class BuildingsConfig(AppConfig):
    name = "project.buildings"
    label = "buildings"
    verbose_name = "Buildings by ZIP code"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the index-aware spatial lookups (`within_indexed`, `bboverlaps_indexed`).
        from . import lookups  # noqa: F401
