from django.apps import AppConfig


class CdpConfig(AppConfig):
    name = "cdp"
    verbose_name = "CDP"

    def ready(self) -> None:
        from cdp import openapi  # noqa: F401  (registers the OpenAPI auth extension)
