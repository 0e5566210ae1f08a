from django.apps import AppConfig


class BuildingsConfig(AppConfig):
    name = "project.buildings"
    label = "buildings"
    verbose_name = "Buildings by ZIP code"
    default_auto_field = "django.db.models.BigAutoField"
