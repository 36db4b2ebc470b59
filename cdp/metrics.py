"""Prometheus metrics shared by the apps, and their exposition at `GET /metrics`.

Labels are bounded on purpose: URL patterns (never raw paths), task names, segment
kinds, cache names, a handful of reasons. docs/operations.md ("Metrics and logs") lists
every metric. With PROMETHEUS_MULTIPROC_DIR set (gunicorn/granian with several worker
processes, Celery's prefork pool), each process writes its samples to files there and
the scrape aggregates them; otherwise the process's own registry is served.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# --- HTTP (cdp.observability.RequestObservabilityMiddleware) -------------------------------

http_requests = Counter(
    "cdp_http_requests_total",
    "HTTP requests answered, by URL pattern, method and status class",
    ["route", "method", "status"],
)
http_request_duration = Histogram(
    "cdp_http_request_duration_seconds",
    "Time from the first middleware in to the response out, by URL pattern, method and status class",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# --- Ingestion (profiles.ingestion.events_ingest, once per batch) ------------------------

events_accepted = Counter("cdp_events_accepted_total", "Events stored")
events_rejected = Counter("cdp_events_rejected_total", "Events refused as invalid (400 entries)")
events_duplicates = Counter(
    "cdp_events_duplicates_total", "Events not stored again: their message_id was already stored"
)
events_dropped = Counter(
    "cdp_events_dropped_total",
    "Events received but intentionally not stored",
    ["reason"],  # consent (no analytics consent), erased (identity was erased)
)

decisions_dropped = Counter(
    "cdp_decisions_dropped_total",
    "Decision log rows dropped because the buffer overflowed (the database was down)",
)

readiness_failures = Counter(
    "cdp_readiness_check_failures_total",
    "/readyz checks that failed, by check (database, redis, broker)",
    ["check"],
)

# --- Caches ---------------------------------------------------------------------------------

cache_hits = Counter("cdp_cache_hits_total", "Cache lookups answered from the cache", ["cache"])
cache_misses = Counter(
    "cdp_cache_misses_total", "Cache lookups that had to read the database", ["cache"]
)
# Bound once: the hot paths pay one increment, not a label lookup.
decide_snapshot_hits = cache_hits.labels(cache="decide_snapshot")
decide_snapshot_misses = cache_misses.labels(cache="decide_snapshot")
source_key_hits = cache_hits.labels(cache="source_key")
source_key_misses = cache_misses.labels(cache="source_key")

# --- Segments ---------------------------------------------------------------------------------

segment_recompute_duration = Histogram(
    "cdp_segment_recompute_duration_seconds",
    "Batch recompute of one segment (query and membership swap), by what its condition reads",
    ["kind"],  # events, score, profile: see segment_kind()
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)


def segment_kind(uses: set[str]) -> str:
    """The bounded label of a segment condition: what it reads, the costliest first.
    Slugs are made by marketers and by every clustering, so they are not labels; the
    per-segment durations are in the admin's size history (SegmentSize.duration_ms)."""
    if "event" in uses:
        return "events"
    if "score" in uses:
        return "score"
    return "profile"


# --- Celery tasks -------------------------------------------------------------------------------

task_outcomes = Counter(
    "cdp_celery_tasks_total",
    "Celery task runs by task name and outcome (success, failure, retry)",
    ["task", "outcome"],
)


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or "unknown")


def _on_task_success(sender: Any = None, **kwargs: Any) -> None:
    task_outcomes.labels(task=_task_name(sender), outcome="success").inc()


def _on_task_failure(sender: Any = None, **kwargs: Any) -> None:
    task_outcomes.labels(task=_task_name(sender), outcome="failure").inc()


def _on_task_retry(sender: Any = None, **kwargs: Any) -> None:
    task_outcomes.labels(task=_task_name(sender), outcome="retry").inc()


def celery_signals_connect() -> None:
    """Count task outcomes (called by cdp.celery; weak=False: the handlers are module
    functions anyway, and idempotent through dispatch_uid)."""
    from celery import signals

    signals.task_success.connect(_on_task_success, weak=False, dispatch_uid="cdp-metrics-ok")
    signals.task_failure.connect(_on_task_failure, weak=False, dispatch_uid="cdp-metrics-fail")
    signals.task_retry.connect(_on_task_retry, weak=False, dispatch_uid="cdp-metrics-retry")


# --- Queue depth, read from Redis at scrape time ----------------------------------------------

QUEUE_TIMEOUT_SECONDS = 0.5
_redis_clients: dict[str, Any] = {}
_redis_lock = threading.Lock()


def _redis_for(url: str) -> Any:
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # No retries: a scrape must answer within Prometheus's timeout even when the
            # broker drops packets (redis-py would otherwise retry with backoff).
            client = redis.Redis.from_url(
                url,
                socket_connect_timeout=QUEUE_TIMEOUT_SECONDS,
                socket_timeout=QUEUE_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
            _redis_clients[url] = client
        return client


def _celery_queue_keys() -> tuple[str, dict[str, list[str]]]:
    """The broker URL and, per queue of the Celery app, the Redis lists that hold it
    (kombu keeps one list per priority step: `name`, `name\\x06\\x163`, …)."""
    from cdp.celery import app

    options = app.conf.broker_transport_options or {}
    steps = options.get("priority_steps", [0, 3, 6, 9])
    sep = options.get("sep", "\x06\x16")
    keys = {
        name: [name if step == 0 else f"{name}{sep}{step}" for step in steps]
        for name in sorted(app.amqp.queues.keys())
    }
    return str(app.conf.broker_url or ""), keys


class QueueDepthCollector(Collector):
    """Celery queue lengths (Redis broker only: the embedded memory broker has no queue
    to watch) and the decision log list that rules.tasks.decisions_drain empties."""

    def collect(self) -> Iterator[Metric]:
        broker_url, queues = _celery_queue_keys()
        if broker_url.startswith(("redis://", "rediss://", "unix://")):
            depth = GaugeMetricFamily(
                "cdp_celery_queue_length", "Messages waiting in a Celery queue", labels=["queue"]
            )
            up = GaugeMetricFamily(
                "cdp_celery_broker_up", "1 if the broker answered the queue-length scrape"
            )
            try:
                pipe = _redis_for(broker_url).pipeline(transaction=False)
                for lists in queues.values():
                    for key in lists:
                        pipe.llen(key)
                lengths = iter(pipe.execute())
                for name, lists in queues.items():
                    depth.add_metric([name], float(sum(next(lengths) for _ in lists)))
                up.add_metric([], 1.0)
            except Exception as exc:
                logger.warning("metrics: broker unreachable (%s)", type(exc).__name__)
                up.add_metric([], 0.0)
            yield depth
            yield up
        from django.conf import settings

        if settings.REDIS_URL:
            from rules.decisionlog import QUEUE_KEY

            pending = GaugeMetricFamily(
                "cdp_decision_log_queue_length",
                "Decisions waiting in Redis for rules.tasks.decisions_drain",
            )
            try:
                pending.add_metric([], float(_redis_for(settings.REDIS_URL).llen(QUEUE_KEY)))
            except Exception as exc:
                logger.warning("metrics: Redis unreachable (%s)", type(exc).__name__)
                return
            yield pending


_scrape_registry = CollectorRegistry(auto_describe=False)
_scrape_registry.register(QueueDepthCollector())


# --- Exposition -----------------------------------------------------------------------------------


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_exposition() -> bytes:
    """Every metric in the text format: all processes' samples in multiprocess mode, this
    process's otherwise, then the gauges read at scrape time."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        samples = generate_latest(registry)
    else:
        samples = generate_latest(REGISTRY)
    return samples + generate_latest(_scrape_registry)


LOOPBACK = frozenset({"127.0.0.1", "::1"})
# A request that came through a proxy only looks local: the proxy is the peer.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP", "HTTP_FORWARDED")


def metrics_access(request: Any) -> int:
    """200 if the caller may read /metrics, else the status to answer (401 or 403).

    The bearer token of settings.CDP_METRICS_TOKEN or a staff session may; without a
    token configured, so may a direct (unproxied) call from the loopback address where
    CDP_METRICS_ALLOW_LOOPBACK (default: DEBUG) allows it. Not by default in production:
    a proxy on the same host that adds no X-Forwarded-For (nginx's plain proxy_pass)
    would make every visitor look local."""
    from django.conf import settings

    token: str = settings.CDP_METRICS_TOKEN
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if token and header[:7].lower() == "bearer ":
        if hmac.compare_digest(header[7:].strip().encode(), token.encode()):
            return 200
        return 401
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return 200
    if token:
        return 401
    meta = request.META
    if (
        settings.CDP_METRICS_ALLOW_LOOPBACK
        and meta.get("REMOTE_ADDR") in LOOPBACK
        and not any(h in meta for h in PROXY_HEADERS)
    ):
        return 200
    return 403


def metrics_view(request: Any) -> Any:
    """GET /metrics (Prometheus text format). Not part of the public API (not in the
    OpenAPI document): an operator endpoint."""
    from django.http import HttpResponse, HttpResponseNotAllowed

    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    status = metrics_access(request)
    if status != 200:
        response = HttpResponse(
            "forbidden\n" if status == 403 else "unauthorized\n",
            status=status,
            content_type="text/plain; charset=utf-8",
        )
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Cache-Control"] = "no-store"
        return response
    started = time.perf_counter()
    body = metrics_exposition()
    response = HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    response["X-Scrape-Seconds"] = f"{time.perf_counter() - started:.4f}"
    return response


# --- A worker's own endpoint ------------------------------------------------------------------


def worker_metrics_serve(port: int, addr: str = "127.0.0.1") -> None:
    """Serve the worker's task metrics on addr:port (CDP_WORKER_METRICS_PORT): a Celery
    worker has no web process to scrape. Multiprocess mode aggregates the pool's children."""
    from prometheus_client import start_http_server

    registry: CollectorRegistry = REGISTRY
    if multiprocess_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=addr, registry=registry)
    logger.info("worker metrics served on port %d", port)
