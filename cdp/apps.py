from django.apps import AppConfig


class CdpConfig(AppConfig):
    name = "cdp"
    verbose_name = "CDP"

    def ready(self) -> None:
        from cdp import (
            login_throttle,  # noqa: F401  (counts failed admin logins)
            openapi,  # noqa: F401  (registers the OpenAPI auth extension)
            throttles,  # noqa: F401  (registers the rate-limit settings check)
        )
