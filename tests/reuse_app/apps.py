from django.apps import AppConfig


class ReuseAppConfig(AppConfig):
    name = "reuse_app"
    default_auto_field = "django.db.models.BigAutoField"
