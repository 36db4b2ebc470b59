"""The Celery app. Broker is Redis when REDIS_URL is set; tasks run eagerly otherwise."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cdp.settings")

app = Celery("cdp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _metrics_setup() -> None:
    """Task outcomes as Prometheus counters; a worker with CDP_WORKER_METRICS_PORT set
    serves them itself (it has no web process to be scraped through)."""
    from celery import signals

    from cdp import metrics

    metrics.celery_signals_connect()

    def serve(**kwargs: object) -> None:
        port = os.environ.get("CDP_WORKER_METRICS_PORT")
        if port:
            metrics.worker_metrics_serve(
                int(port), os.environ.get("CDP_WORKER_METRICS_ADDR", "127.0.0.1")
            )

    signals.worker_ready.connect(serve, weak=False, dispatch_uid="cdp-worker-metrics")


_metrics_setup()
