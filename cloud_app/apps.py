from django.apps import AppConfig


class CloudAppConfig(AppConfig):
    name = "cloud_app"
    verbose_name = "Cloud node"
