from django.apps import AppConfig


class SegmentsConfig(AppConfig):
    name = "segments"

    def ready(self) -> None:
        from segments import receivers  # noqa: F401  (merge, real-time, privacy handlers)
