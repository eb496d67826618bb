from django.apps import AppConfig


class EdgeAppConfig(AppConfig):
    name = "edge_app"
    verbose_name = "Edge node"
