"""Shared fixtures: sources with their raw keys, API clients for each kind of caller."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from profiles.ingestion import schemas_invalidate, user_agent_is_bot
from profiles.selectors import source_key_cache_clear
from profiles.services import SourceKeys, source_create


@pytest.fixture(autouse=True, scope="session")
def _generous_rate_limits() -> Iterator[None]:
    """Tests (and their live servers) send far faster than a browser from one address;
    tests/cdp/test_throttles.py sets low limits where it proves them."""
    from django.conf import settings
    from django.test import override_settings

    rates = dict.fromkeys(("write_key", "secret_key", "client_ip"), "1000000/s")
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        yield


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    from cdp import throttles
    from recommendations import selectors as reco_selectors
    from rules import decide, decisionlog
    from segments.ml.services import models_cache_reset
    from segments.services import realtime_flag_reset

    realtime_flag_reset()
    throttles.local_counts_reset()
    models_cache_reset()
    reco_selectors.reset()
    decide.reset()
    # Decisions are written by flush() in the test's own thread (and transaction).
    decisionlog.autostart = False
    decisionlog.discard()
    cache.clear()
    source_key_cache_clear()
    schemas_invalidate()
    yield
    decisionlog.discard()
    decide.reset()
    source_key_cache_clear()
    schemas_invalidate()
    user_agent_is_bot.cache_clear()


@pytest.fixture
def source(db: Any) -> SourceKeys:
    return source_create(name="Shop", allowed_origins=["https://shop.example"])


@pytest.fixture
def verified_source(db: Any) -> SourceKeys:
    return source_create(name="Strict shop", require_identity_verification=True)


def _client(key: str | None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def write_client(source: SourceKeys) -> APIClient:
    return _client(source.write_key)


@pytest.fixture
def secret_client(source: SourceKeys) -> APIClient:
    return _client(source.secret_key)


@pytest.fixture
def anon_client() -> APIClient:
    return _client(None)


@pytest.fixture
def staff_client(db: Any) -> APIClient:
    user = get_user_model().objects.create_user("staff", password="pw-staff-123", is_staff=True)
    client = APIClient()
    client.force_login(user)
    return client


def post_events(client: APIClient, body: Any, **extra: Any) -> Any:
    return client.post("/api/v1/events", body, format="json", **extra)


@pytest.fixture
def superuser_client(db: Any) -> APIClient:
    """A logged-in superuser: the admin screens."""
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-admin-123")
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def user_client(db: Any) -> APIClient:
    """A logged-in user who is not staff: no API access through the session."""
    user = get_user_model().objects.create_user("shopper", password="pw-shopper-123")
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def privacy_export_dir(tmp_path: Any, settings: Any) -> Any:
    """Access export bundles go to a fresh folder for the test."""
    folder = tmp_path / "privacy-exports"
    settings.CDP = {**settings.CDP, "PRIVACY_EXPORT_DIR": str(folder)}
    return folder


@pytest.fixture
def celery_eager(settings: Any) -> Iterator[None]:
    """Tasks run in-process when queued (also where REDIS_URL makes them go to a broker)."""
    from cdp.celery import app

    before = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = True
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


@pytest.fixture
def compliance_client(db: Any) -> APIClient:
    """A logged-in staff member of the "Compliance" group (created by a migration)."""
    from django.contrib.auth.models import Group

    user = get_user_model().objects.create_user("officer", password="pw-officer-123", is_staff=True)
    user.groups.add(Group.objects.get(name="Compliance"))
    client = APIClient()
    client.force_login(user)
    return client


@pytest.fixture
def ingest(source: SourceKeys) -> Any:
    """Store events through the real ingestion path, as the source's trusted server.

    `ingest(*payloads, at=None)`: `at` is when they are received (default: now); each
    payload gets a unique message_id unless it names one.
    """
    import uuid as _uuid

    from django.utils import timezone

    from profiles.ingestion import IngestContext, IngestResult, events_ingest

    def _ingest(*payloads: dict[str, Any], at: Any = None) -> IngestResult:
        ctx = IngestContext(
            source_id=source.source.pk,
            identity_secret=source.source.identity_secret,
            require_identity_verification=False,
            trusted=True,
            received_at=at or timezone.now(),
        )
        batch = [{"message_id": _uuid.uuid4().hex, **p} for p in payloads]
        result = events_ingest(ctx=ctx, payloads=batch)
        assert not result.rejected, result.rejected
        return result

    return _ingest


@pytest.fixture
def celery_queued(settings: Any) -> Iterator[list[str]]:
    """Tasks are queued, not run (even without REDIS_URL): yields the names of the tasks
    published during the test. The queue is purged afterwards."""
    from celery.signals import before_task_publish

    from cdp.celery import app

    published: list[str] = []

    def record(sender: str | None = None, **kwargs: Any) -> None:
        published.append(str(sender))

    before = app.conf.task_always_eager
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    before_task_publish.connect(record, weak=False)
    try:
        yield published
    finally:
        before_task_publish.disconnect(record)
        app.conf.task_always_eager = before
        app.control.purge()
