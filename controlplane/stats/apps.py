from django.apps import AppConfig


class StatsConfig(AppConfig):
    name = "controlplane.stats"
    label = "stats"
    verbose_name = "Daily counts"
