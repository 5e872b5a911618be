from django.apps import AppConfig


class SuppressionConfig(AppConfig):
    name = "suppression"
    default_auto_field = "django.db.models.BigAutoField"
