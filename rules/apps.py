from django.apps import AppConfig


class RulesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "rules"
    verbose_name = "Personalization"

    def ready(self) -> None:
        from rules import receivers  # noqa: F401
