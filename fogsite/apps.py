from django.apps import AppConfig


class FogsiteConfig(AppConfig):
    name = "fogsite"
    verbose_name = "Fog pipeline"

    def ready(self):
        from fogsite import checks  # noqa: F401  (registers the system checks)
