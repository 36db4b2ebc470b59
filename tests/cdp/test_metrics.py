"""GET /metrics: who may read it, what it shows (request, ingestion, cache, recompute,
task and queue metrics), the request id, and multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import shared_task
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import override_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from cdp import metrics
from rules import decisionlog
from rules import services as rules_services
from rules.models import Slot
from segments.models import Segment
from segments.services import segment_recompute
from tests.conftest import post_events

BASE_DIR = Path(__file__).resolve().parents[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: APIClient, **extra: Any) -> dict[str, Any]:
    response = client.get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.content.decode())}
    return families


def values(families: dict[str, Any], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for s in families[name].samples
        if s.name == name or s.name == name + "_total"
    }


# --- access -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_loopback_without_token_may_scrape(anon_client):
    # Given no CDP_METRICS_TOKEN and a direct call from 127.0.0.1 (the test client's)
    families = scrape(anon_client)

    # Then the metrics are served
    assert "cdp_http_requests" in families


@pytest.mark.django_db
def test_in_production_loopback_alone_may_not_scrape(anon_client, staff_client, settings):
    # Given production's default (no token, loopback not trusted: a proxy on the same
    # host without X-Forwarded-For would make every visitor look local)
    settings.CDP_METRICS_ALLOW_LOOPBACK = False

    # Then a call from 127.0.0.1 is refused, and staff still may
    assert anon_client.get("/metrics").status_code == 403
    scrape(staff_client)


@pytest.mark.django_db
def test_ipv6_loopback_without_token_may_scrape(anon_client):
    assert anon_client.get("/metrics", REMOTE_ADDR="::1").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "extra",
    [
        {"REMOTE_ADDR": "203.0.113.7"},
        # a proxy on the same host makes every caller look local: not trusted
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.7"},
        {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_REAL_IP": "203.0.113.7"},
    ],
)
def test_remote_or_proxied_caller_without_token_is_403(anon_client, extra):
    response = anon_client.get("/metrics", **extra)

    assert response.status_code == 403
    assert b"cdp_" not in response.content


@pytest.mark.django_db
@override_settings(CDP_METRICS_TOKEN="scrape-token-123")
def test_with_a_token_configured_only_the_token_or_staff_may_scrape(anon_client, staff_client):
    # Given a configured token: loopback alone no longer suffices
    bare = anon_client.get("/metrics")
    assert bare.status_code == 401
    assert bare["WWW-Authenticate"].startswith("Bearer")
    # … a wrong token is refused
    wrong = anon_client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope", REMOTE_ADDR="203.0.113.7")
    assert wrong.status_code == 401
    # … the token works from anywhere
    scrape(anon_client, HTTP_AUTHORIZATION="Bearer scrape-token-123", REMOTE_ADDR="203.0.113.7")
    # … and so does a staff session
    scrape(staff_client, REMOTE_ADDR="203.0.113.7")


@pytest.mark.django_db
def test_source_keys_and_non_staff_sessions_may_not_scrape(secret_client, user_client):
    assert secret_client.get("/metrics", REMOTE_ADDR="203.0.113.7").status_code == 403
    assert user_client.get("/metrics", REMOTE_ADDR="203.0.113.7").status_code == 403


@pytest.mark.django_db
def test_inactive_staff_may_not_scrape(staff_client):
    get_user_model().objects.filter(username="staff").update(is_active=False)

    assert staff_client.get("/metrics", REMOTE_ADDR="203.0.113.7").status_code == 403


@pytest.mark.django_db
def test_metrics_only_answers_get(anon_client):
    assert anon_client.post("/metrics").status_code == 405


def test_metrics_is_not_in_the_openapi_document(anon_client, db):
    paths = anon_client.get("/api/schema/?format=json").json()["paths"]

    assert not [p for p in paths if "metrics" in p]


# --- HTTP requests ----------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_are_counted_by_url_pattern_never_by_raw_path(secret_client, anon_client):
    # Given a request whose path carries a slug
    secret_client.get("/api/v1/segments/some-unknown-slug-4711")

    # When the metrics are scraped
    families = scrape(anon_client)

    # Then it is counted under its URL pattern, method and status class …
    counted = values(families, "cdp_http_requests")
    key = (("method", "GET"), ("route", "api/v1/segments/<slug:slug>"), ("status", "4xx"))
    assert counted[key] >= 1
    assert "cdp_http_request_duration_seconds" in families
    # … and no raw path or slug is a label anywhere
    text = anon_client.get("/metrics").content.decode()
    assert "some-unknown-slug-4711" not in text


@pytest.mark.django_db
def test_unknown_paths_and_methods_share_one_label(anon_client):
    before = (
        sample("cdp_http_requests_total", route="unmatched", method="GET", status="4xx"),
        sample("cdp_http_requests_total", route="healthz", method="other", status="4xx"),
    )

    anon_client.get(f"/no/such/{uuid.uuid4()}")
    anon_client.generic("BREW", "/healthz")

    after = (
        sample("cdp_http_requests_total", route="unmatched", method="GET", status="4xx"),
        sample("cdp_http_requests_total", route="healthz", method="other", status="4xx"),
    )
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1


def test_response_carries_a_request_id(anon_client):
    response = anon_client.get("/healthz")

    rid = response["X-Request-ID"]
    assert len(rid) == 32
    assert anon_client.get("/healthz")["X-Request-ID"] != rid


@pytest.mark.parametrize("incoming", ["req-1234abcd", "6f1c2f0e-8d1b-4d3c-9a55-0c1e2d3f4a5b"])
def test_a_well_formed_incoming_request_id_is_kept(anon_client, incoming):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID=incoming)

    assert response["X-Request-ID"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["short", "has space in it", "x" * 101, "ann@example.com", "203.0.113.7", "wk_abcdefghijkl"],
)
def test_a_malformed_or_identifying_request_id_is_replaced(anon_client, incoming):
    response = anon_client.get("/healthz", HTTP_X_REQUEST_ID=incoming)

    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32


def test_the_observability_middleware_is_first():
    assert settings.MIDDLEWARE[0] == "cdp.observability.RequestObservabilityMiddleware"


# --- ingestion --------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_are_counted_accepted_rejected_and_duplicate(write_client):
    # Given the counters before
    before = {
        n: sample(n)
        for n in (
            "cdp_events_accepted_total",
            "cdp_events_rejected_total",
            "cdp_events_duplicates_total",
        )
    }

    # When a batch of two good events, a repeated message id and an invalid event arrives
    event = {"type": "track", "event": "viewed", "anonymous_id": "a-metrics"}
    response = post_events(
        write_client,
        {
            "batch": [
                {**event, "message_id": "m-1"},
                {**event, "message_id": "m-2"},
                {**event, "message_id": "m-1"},
                {"type": "track", "anonymous_id": "a-metrics"},  # no event name
            ]
        },
    )
    assert response.status_code == 202, response.content

    # Then each outcome is counted once
    assert sample("cdp_events_accepted_total") == before["cdp_events_accepted_total"] + 2
    assert sample("cdp_events_duplicates_total") == before["cdp_events_duplicates_total"] + 1
    assert sample("cdp_events_rejected_total") == before["cdp_events_rejected_total"] + 1


@pytest.mark.django_db
def test_events_dropped_for_lack_of_consent_are_counted(write_client):
    # Given a visitor who withdrew analytics consent
    response = write_client.post(
        "/api/v1/consent",
        {"anonymous_id": "a-optout", "purposes": {"analytics": False}, "policy_version": "v1"},
        format="json",
    )
    assert response.status_code == 201, response.content
    before = sample("cdp_events_dropped_total", reason="consent")

    # When their storefront still sends an event
    post_events(write_client, {"type": "page", "name": "Home", "anonymous_id": "a-optout"})

    # Then it is counted as dropped for consent
    assert sample("cdp_events_dropped_total", reason="consent") == before + 1


# --- caches -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_source_key_cache_hits_and_misses(write_client):
    hits = sample("cdp_cache_hits_total", cache="source_key")
    misses = sample("cdp_cache_misses_total", cache="source_key")

    write_client.get("/api/v1/consent?anonymous_id=a-cache")  # first use of the key
    write_client.get("/api/v1/consent?anonymous_id=a-cache")  # cached

    assert sample("cdp_cache_misses_total", cache="source_key") == misses + 1
    assert sample("cdp_cache_hits_total", cache="source_key") == hits + 1


@pytest.mark.django_db
def test_decide_snapshot_cache_hits_and_misses(write_client):
    # Given a slot and a known visitor
    rules_services.slot_save(
        slot=Slot(key="metrics_slot"),
        actor="test",
        variants=[{"key": "base", "title": "Base"}],
        default_variant="base",
    )
    post_events(write_client, {"type": "page", "name": "Home", "anonymous_id": "a-snap"})
    hits = sample("cdp_cache_hits_total", cache="decide_snapshot")
    misses = sample("cdp_cache_misses_total", cache="decide_snapshot")
    body = {"anonymous_id": "a-snap", "slots": ["metrics_slot"]}

    # When they ask twice
    for _ in range(2):
        response = write_client.post("/api/v1/decide", body, format="json")
        assert response.status_code == 200, response.content

    # Then the first built the snapshot and the second read it from the cache
    assert sample("cdp_cache_misses_total", cache="decide_snapshot") == misses + 1
    assert sample("cdp_cache_hits_total", cache="decide_snapshot") == hits + 1


# --- segments ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_segment_recompute_duration_is_observed_by_kind(anon_client):
    behavioural = Segment.objects.create(
        slug="metrics-buyers", name="Buyers", condition={"event": "purchase", "within": "7d"}
    )
    plain = Segment.objects.create(
        slug="metrics-pro", name="Pro", condition={"trait": "plan", "op": "eq", "value": "pro"}
    )
    before = {
        k: sample("cdp_segment_recompute_duration_seconds_count", kind=k)
        for k in ("events", "profile")
    }

    segment_recompute(segment=behavioural)
    segment_recompute(segment=plain)

    assert sample("cdp_segment_recompute_duration_seconds_count", kind="events") == (
        before["events"] + 1
    )
    assert sample("cdp_segment_recompute_duration_seconds_count", kind="profile") == (
        before["profile"] + 1
    )
    assert "metrics-buyers" not in anon_client.get("/metrics").content.decode()


def test_segment_kind_is_bounded():
    assert metrics.segment_kind({"event", "trait"}) == "events"
    assert metrics.segment_kind({"score"}) == "score"
    assert metrics.segment_kind({"trait", "attr", "consent"}) == "profile"


# --- Celery tasks -----------------------------------------------------------------------


@shared_task(name="tests.metrics.ok")
def _task_ok() -> int:
    return 1


@shared_task(name="tests.metrics.fails")
def _task_fails() -> None:
    raise RuntimeError("boom")


@shared_task(bind=True, name="tests.metrics.retries", max_retries=1, default_retry_delay=0)
def _task_retries(self: Any) -> None:
    if self.request.retries == 0:
        raise self.retry(exc=RuntimeError("once more"))


def _outcome(task: str, outcome: str) -> float:
    return sample("cdp_celery_tasks_total", task=task, outcome=outcome)


def test_task_outcomes_are_counted_by_task_name():
    ok, failed = _outcome("tests.metrics.ok", "success"), _outcome("tests.metrics.fails", "failure")
    retried = _outcome("tests.metrics.retries", "retry")

    _task_ok.apply()
    # (not propagated, as on a worker: a propagated eager failure is the caller's error)
    assert _task_fails.apply(throw=False).failed()
    _task_retries.apply(throw=False)

    assert _outcome("tests.metrics.ok", "success") == ok + 1
    assert _outcome("tests.metrics.fails", "failure") == failed + 1
    assert _outcome("tests.metrics.retries", "retry") == retried + 1


# --- queue depth ------------------------------------------------------------------------


@pytest.mark.django_db
def test_queue_depth_is_read_from_the_redis_broker(anon_client):
    families = scrape(anon_client)

    if not str(settings.CELERY_BROKER_URL).startswith("redis"):
        # The embedded memory broker has no queue to watch
        assert "cdp_celery_queue_length" not in families
        return
    depth = values(families, "cdp_celery_queue_length")
    assert (("queue", "celery"),) in depth
    assert values(families, "cdp_celery_broker_up") == {(): 1.0}


@pytest.mark.django_db
@pytest.mark.skipif(
    not settings.REDIS_URL, reason="the decision log is a Redis list only with Redis"
)
def test_decision_log_queue_length_is_read_from_redis(anon_client):
    client = decisionlog._client()
    client.delete(decisionlog.QUEUE_KEY)
    client.rpush(decisionlog.QUEUE_KEY, b"{}", b"{}", b"{}")
    try:
        families = scrape(anon_client)
    finally:
        client.delete(decisionlog.QUEUE_KEY)

    assert values(families, "cdp_decision_log_queue_length") == {(): 3.0}


@pytest.mark.django_db
def test_an_unreachable_broker_does_not_fail_the_scrape(anon_client, monkeypatch):
    # Given a broker on a closed port
    monkeypatch.setattr(
        metrics,
        "_celery_queue_keys",
        lambda: ("redis://127.0.0.1:6399/0", {"celery": ["celery"]}),
    )

    # When Prometheus scrapes / Then it gets everything else, and the broker as down
    families = scrape(anon_client)
    assert values(families, "cdp_celery_broker_up") == {(): 0.0}
    assert "cdp_http_requests" in families


# --- multiprocess mode ------------------------------------------------------------------

_CHILD = """
import sys
from cdp import metrics
if sys.argv[1] == "count":
    metrics.events_accepted.inc(int(sys.argv[2]))
    metrics.http_requests.labels("api/v1/events", "POST", "2xx").inc()
else:
    sys.stdout.write(metrics.metrics_exposition().decode())
"""


def test_multiprocess_mode_aggregates_every_process(tmp_path):
    # Given PROMETHEUS_MULTIPROC_DIR, as gunicorn's or granian's workers would share it
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "cdp.settings",
    }
    env.pop("REDIS_URL", None)  # the scrape-time gauges are tested above
    env.pop("CELERY_BROKER_URL", None)

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, *args],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    # When two worker processes count, and a third serves the scrape
    run("count", "3")
    run("count", "4")
    text = run("scrape")

    # Then the scrape sums them
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert values(families, "cdp_events_accepted") == {(): 7.0}
    key = (("method", "POST"), ("route", "api/v1/events"), ("status", "2xx"))
    assert values(families, "cdp_http_requests")[key] == 2.0
