from django.apps import AppConfig


class ProfilesConfig(AppConfig):
    name = "profiles"
    verbose_name = "Profiles and events"

    def ready(self) -> None:
        from profiles import privacy

        privacy.register()
