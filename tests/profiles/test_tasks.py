"""Celery tasks through a real worker: Redis when REDIS_URL is set, else the in-memory broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from celery.contrib.testing.worker import start_worker

from cdp.celery import app
from profiles.ingestion import IngestContext, events_ingest
from profiles.models import Identity, Profile
from profiles.tasks import profile_stats_rebuild, profiles_stats_rebuild_all, rfm_scores_compute


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[None]:
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = eager


def _wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
def test_worker_rebuilds_and_scores(source, celery_worker):
    # given a buyer whose stored attributes were lost
    now = datetime.now(UTC)
    ctx = IngestContext(
        source_id=source.source.pk,
        identity_secret=source.source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=now,
    )
    events_ingest(
        ctx=ctx,
        payloads=[
            {
                "type": "track",
                "event": "purchase",
                "user_id": "buyer",
                "properties": {"revenue": 42},
                "timestamp": (now - timedelta(hours=h)).isoformat(),
            }
            for h in (1, 5)
        ],
    )
    pid = Identity.objects.get(value="buyer").profile_id
    Profile.objects.filter(pk=pid).update(event_count=0, purchase_count=0, revenue=0)
    # when the worker runs the rebuild tasks
    profiles_stats_rebuild_all.delay()
    assert _wait_for(lambda: Profile.objects.get(pk=pid).purchase_count == 2)
    Profile.objects.filter(pk=pid).update(event_count=0)
    profile_stats_rebuild.delay([str(pid)])
    rfm_scores_compute.delay()
    # then the attributes and scores are back
    assert _wait_for(
        lambda: (
            Profile.objects.get(pk=pid).rfm_monetary == 5
            and Profile.objects.get(pk=pid).event_count == 2
        )
    )
