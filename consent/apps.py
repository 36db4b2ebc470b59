from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent and privacy"

    def ready(self) -> None:
        from consent import receivers  # noqa: F401  (hooks, merge receiver, privacy handlers)
