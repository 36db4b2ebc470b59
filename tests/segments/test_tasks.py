"""Segment tasks through a real Celery worker (Redis when REDIS_URL is set, else the
in-memory broker): batch recompute while events arrive, and the real-time path."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import OperationalError
from django.utils import timezone

from cdp.celery import app
from profiles.models import Identity
from segments import services
from segments.compiler import matching_ids
from segments.models import Membership, RecomputeRun, RefreshPolicy, Segment
from segments.tasks import segments_recompute
from tests.conftest import post_events

T = TypeVar("T")
CART = {"event": "add_to_cart", "within": "24h"}
SPENDERS = {
    "event": "purchase",
    "measure": {"fn": "sum", "property": "price", "op": "gte", "value": 80},
}
PRO_CARTS = {"all": [{"segment": "carts"}, {"trait": "plan", "op": "eq", "value": "pro"}]}


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[None]:
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = eager


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _read(predicate):
            return True
        time.sleep(0.2)
    return _read(predicate)


def _read(fn: Callable[[], T]) -> T:
    """Run a read, retrying while the worker holds a table lock: the SQLite test database
    lives in shared-cache memory, where a reader gets "table is locked" at once instead of
    waiting (PostgreSQL readers never wait)."""
    for _ in range(100):
        try:
            return fn()
        except OperationalError as exc:
            if "locked" not in str(exc) and "ROLLBACK" not in str(exc):
                raise
            time.sleep(0.05)
    return fn()


def make(slug: str, condition: Any, **fields: Any) -> Segment:
    return services.segment_save(
        segment=Segment(slug=slug, name=slug.title(), condition=condition, **fields), actor="test"
    )


def members(slug: str) -> set[uuid.UUID]:
    return set(Membership.objects.filter(segment__slug=slug).values_list("profile_id", flat=True))


def batch(round_: int) -> list[dict[str, Any]]:
    """Events of one round: new visitors, returning ones, buyers and plan changes."""
    now = timezone.now()
    events: list[dict[str, Any]] = []
    for i in range(6):
        user = f"u{(round_ * 3 + i) % 12}"
        ts = (now - timedelta(minutes=i)).isoformat()
        events.append({"type": "track", "event": "add_to_cart", "user_id": user, "timestamp": ts})
        if (round_ + i) % 3 == 0:
            events.append(
                {
                    "type": "track",
                    "event": "purchase",
                    "user_id": user,
                    "properties": {"price": 40 + i},
                    "timestamp": ts,
                }
            )
        if (round_ + i) % 4 == 0:
            plan = "pro" if round_ % 2 else "free"
            events.append(
                {"type": "identify", "user_id": user, "traits": {"plan": plan}, "timestamp": ts}
            )
    events.append({"type": "page", "anonymous_id": f"anon-{round_}", "timestamp": now.isoformat()})
    return events


@pytest.mark.integration
def test_worker_recomputes_segments_while_events_arrive(source, secret_client, celery_worker):
    # Given segments of every refresh policy, one depending on another
    make("carts", CART)
    make("spenders", SPENDERS, refresh=RefreshPolicy.SCHEDULED)
    make("pro-carts", PRO_CARTS, priority=10)

    # When batches of events arrive while recomputes are queued
    for round_ in range(10):
        response = post_events(secret_client, {"batch": batch(round_)})
        assert response.status_code == 202, response.content
        assert response.json()["rejected"] == []
        segments_recompute.delay()

    # Then, once the worker is done, memberships are what the data says
    def settled() -> bool:
        now = timezone.now()
        return all(
            members(s.slug) == set(matching_ids(s.condition, now=now))
            for s in Segment.objects.all()
        )

    assert _wait_for(settled), _read(
        lambda: {
            s.slug: (len(members(s.slug)), len(matching_ids(s.condition, now=timezone.now())))
            for s in Segment.objects.all()
        }
    )
    assert len(_read(lambda: members("carts"))) == 12
    assert _read(lambda: members("spenders"))
    assert _read(lambda: members("pro-carts"))
    assert _wait_for(
        lambda: all(s.size == len(members(s.slug)) for s in Segment.objects.all()), timeout=5.0
    )


@pytest.mark.integration
def test_worker_makes_a_new_cart_visitor_a_member_in_real_time(write_client, celery_worker):
    # Given a real-time segment of recent cart adders
    make("carts", CART)

    # When a new visitor adds to cart through the public API
    started = time.monotonic()
    response = post_events(
        write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "v-worker"}
    )
    assert response.status_code == 202, response.content
    visitor = _read(lambda: Identity.objects.get(value="v-worker").profile_id)

    # Then the worker makes them a member within a few seconds
    assert _wait_for(lambda: members("carts") == {visitor}, timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert _wait_for(lambda: Segment.objects.get(slug="carts").size == 1, timeout=5.0)


@pytest.mark.integration
def test_a_recompute_queued_from_the_admin_runs_on_the_worker_with_progress(
    source, secret_client, celery_worker
):
    # Given two segments, one using the other, and a cart event
    make("carts", CART)
    make("pro-carts", PRO_CARTS, refresh=RefreshPolicy.MANUAL)
    post_events(secret_client, {"type": "track", "event": "add_to_cart", "user_id": "u1"})

    # When a marketer asks for a recompute (the admin action calls this service)
    run = services.recompute_request(slugs=["carts", "pro-carts"], actor="user:marketer")

    # Then the request answered before the work was done, and the worker finishes it
    assert run.status == "queued"
    assert _wait_for(lambda: RecomputeRun.objects.get(pk=run.pk).status == "done")
    run = _read(lambda: RecomputeRun.objects.get(pk=run.pk))
    assert (run.done, run.total, run.current) == (2, 2, "")
    assert run.started_at is not None
    assert run.finished_at is not None
    buyer = _read(lambda: Identity.objects.get(kind="user_id", value="u1").profile_id)
    assert _read(lambda: members("carts")) == {buyer}
