"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cdp.metrics import readiness_failures


class HealthzApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # a load balancer's probes are never rate limited

    @extend_schema(
        summary="Liveness",
        responses=inline_serializer("Healthz", {"status": serializers.CharField()}),
        tags=["operations"],
    )
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyzApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []  # a load balancer's probes are never rate limited

    @extend_schema(
        summary=(
            "Readiness: 503 when the database does not answer; Redis and a separate "
            "broker are reported (status degraded) without failing the probe"
        ),
        responses={
            200: inline_serializer(
                "Readyz", {"status": serializers.CharField(), "checks": serializers.DictField()}
            ),
            503: inline_serializer(
                "ReadyzFailing",
                {"status": serializers.CharField(), "checks": serializers.DictField()},
            ),
        },
        tags=["operations"],
    )
    def get(self, request: Request) -> Response:
        checks: dict[str, str] = {"database": _check_database()}
        if _cache_is_redis():
            checks["redis"] = _check_cache()
        broker = _separate_broker_url()
        if broker:
            checks["broker"] = _check_redis_url(broker)
        for name, result in checks.items():
            if result != "ok":
                readiness_failures.labels(check=name).inc()
        # Only the database makes a process unready: without Redis, ingestion still
        # stores every event and /decide answers from the database (docs/operations.md,
        # Failure modes). A 503 for Redis would have the load balancer drop every web
        # process at once and stop event collection; "degraded" says it instead.
        if checks["database"] != "ok":
            return Response(
                {"status": "unavailable", "checks": checks},
                status=503,
                headers={"Retry-After": "5"},
            )
        ok = all(v == "ok" for v in checks.values())
        return Response({"status": "ok" if ok else "degraded", "checks": checks})


# Each check answers within about a second even when its service is a black hole: the
# cache's own client has 0.5 s timeouts (settings.CACHES), the broker probe too.
PROBE_TIMEOUT_SECONDS = 0.5


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _cache_is_redis() -> bool:
    return "redis" in str(settings.CACHES["default"]["BACKEND"]).lower()


def _check_cache() -> str:
    # The process's own cache connection: what /decide and the key cache really use.
    try:
        cache.set("readyz", "1", 5)
        return "ok" if cache.get("readyz") == "1" else "error: no read-back"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def _separate_broker_url() -> str | None:
    """The Celery broker's URL when it is a Redis other than the cache's (the cache
    check covers a shared one; the embedded memory broker has nothing to probe)."""
    broker = str(getattr(settings, "CELERY_BROKER_URL", "") or "")
    if not broker.startswith(("redis://", "rediss://", "unix://")):
        return None
    if _cache_is_redis() and broker in (
        settings.CACHES["default"].get("LOCATION"),
        settings.REDIS_URL,
    ):
        return None
    return broker


def _check_redis_url(url: str) -> str:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=PROBE_TIMEOUT_SECONDS,
        socket_timeout=PROBE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return "ok" if client.ping() else "error: no pong"
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        client.close()
