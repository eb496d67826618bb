from django.apps import AppConfig


class ToolingConfig(AppConfig):
    """The developer's tools: local services, benchmarks and the fault harness.

    Installed by default so `manage.py services|bench|chaos` work from a checkout; a deployment
    leaves it out with FOG_TOOLING=off. Nothing in the product imports it.
    """

    name = "tooling"
    verbose_name = "Developer tooling"
