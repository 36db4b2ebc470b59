"""Computed attributes: the pure fold, and incremental ingestion == rebuild from raw events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.attributes import stats_of
from profiles.ingestion import IngestContext, events_ingest
from profiles.models import Identity, Profile
from profiles.services import profile_stats_rebuild, profiles_stats_rebuild_all, rfm_scores_compute
from profiles.stats import EventFacts, StatsConfig, engagement_at, sessions_count, stats_rebuild

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CONFIG = StatsConfig(session_timeout_seconds=1800, half_life_days=14.0)


def fact(minutes: float, weight: float = 1.0) -> EventFacts:
    return EventFacts(T0 + timedelta(minutes=minutes), "track", "x", Decimal(0), False, weight)


def test_sessions_split_on_gaps_longer_than_the_timeout():
    stamps = [T0 + timedelta(minutes=m) for m in (0, 10, 40, 71, 200)]
    # gaps: 10, 30 (not > 30), 31, 129 -> sessions start at 0, 71, 200
    assert sessions_count(stamps, 1800) == 3


def test_engagement_halves_every_half_life():
    stats = stats_rebuild([fact(0, 8.0)], CONFIG)
    assert engagement_at(
        stats.engagement_score, stats.engagement_as_of, T0 + timedelta(days=14), 14.0
    ) == pytest.approx(4.0)
    assert engagement_at(
        stats.engagement_score, stats.engagement_as_of, T0 + timedelta(days=28), 14.0
    ) == pytest.approx(2.0)


def test_engagement_does_not_depend_on_arrival_order():
    facts = [fact(0, 1.0), fact(60 * 24 * 3, 3.0), fact(60 * 24 * 10, 10.0)]
    forward = stats_rebuild(facts, CONFIG)
    from profiles.stats import ProfileStats, stats_apply

    late_first, _ = stats_apply(ProfileStats(), [facts[2]], CONFIG)
    late_then, _ = stats_apply(late_first, [facts[0], facts[1]], CONFIG)
    assert late_then.engagement_score == pytest.approx(forward.engagement_score)
    assert late_then.engagement_as_of == forward.engagement_as_of


event_strategy = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["page", "track", "purchase", "add_to_cart", "identify", "bot"]),
        "minute": st.integers(min_value=0, max_value=60 * 24 * 20),
        "revenue": st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False),
    }
)


def _payload(e: dict, user: str, i: int) -> dict:
    ts = (T0 + timedelta(minutes=e["minute"])).isoformat()
    base = {"user_id": user, "message_id": f"{user}-{i}", "timestamp": ts}
    kind = e["kind"]
    if kind == "page":
        return {**base, "type": "page", "name": "Home"}
    if kind == "identify":
        return {**base, "type": "identify", "traits": {"n": i}}
    if kind == "purchase":
        return {
            **base,
            "type": "track",
            "event": "purchase",
            "properties": {"revenue": str(e["revenue"])},
        }
    if kind == "bot":
        return {
            **base,
            "type": "track",
            "event": "viewed",
            "context": {"user_agent": "Googlebot/2.1"},
        }
    return {**base, "type": "track", "event": kind}


@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=st.lists(event_strategy, min_size=1, max_size=25),
    cuts=st.lists(st.integers(min_value=1, max_value=24), max_size=4),
    shuffle=st.randoms(use_true_random=False),
)
def test_incremental_equals_rebuild(source, events, cuts, shuffle):
    # given a profile's events arriving in random order, split into random batches
    user = f"u-{uuid.uuid4()}"
    payloads = [_payload(e, user, i) for i, e in enumerate(events)]
    shuffle.shuffle(payloads)
    bounds = sorted({c for c in cuts if c < len(payloads)})
    ctx = IngestContext(
        source_id=source.source.pk,
        identity_secret=source.source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=T0 + timedelta(days=30),
    )
    start = 0
    for end in [*bounds, len(payloads)]:
        events_ingest(ctx=ctx, payloads=payloads[start:end])
        start = end
    profile = Identity.objects.get(kind="user_id", value=user).profile
    incremental = stats_of(profile)
    # when the attributes are rebuilt from the stored raw events
    profile_stats_rebuild(profile_ids=[profile.pk])
    profile.refresh_from_db()
    rebuilt = stats_of(profile)
    # then both paths agree on every attribute
    assert incremental.event_count == rebuilt.event_count == sum(e["kind"] != "bot" for e in events)
    for field in (
        "first_seen_at",
        "last_seen_at",
        "session_count",
        "page_view_count",
        "purchase_count",
        "revenue",
        "avg_order_value",
        "last_purchase_at",
        "engagement_as_of",
    ):
        assert getattr(incremental, field) == getattr(rebuilt, field), field
    assert incremental.engagement_score == pytest.approx(rebuilt.engagement_score, rel=1e-9)


@pytest.mark.django_db
def test_rebuild_all_and_rfm_scores(source):
    ctx = IngestContext(
        source_id=source.source.pk,
        identity_secret=source.source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=T0 + timedelta(days=30),
    )
    # given ten buyers with growing spend and one browser who never bought
    for n in range(10):
        events_ingest(
            ctx=ctx,
            payloads=[
                {
                    "type": "track",
                    "event": "purchase",
                    "user_id": f"b{n}",
                    "message_id": f"b{n}-{k}",
                    "timestamp": (T0 + timedelta(days=n, minutes=k)).isoformat(),
                    "properties": {"revenue": 10 * (n + 1)},
                }
                for k in range(n + 1)
            ],
        )
    events_ingest(
        ctx=ctx, payloads=[{"type": "page", "user_id": "browser", "timestamp": T0.isoformat()}]
    )
    Profile.objects.update(event_count=0, revenue=0)  # corrupt, then rebuild
    # when everything is rebuilt and scored
    assert profiles_stats_rebuild_all(chunk_profiles=3) == 11
    rfm_scores_compute()
    # then the best buyer scores 5/5/5, the weakest 1/1/1, the browser has none
    best = Identity.objects.get(value="b9").profile
    worst = Identity.objects.get(value="b0").profile
    browser = Identity.objects.get(value="browser").profile
    assert (best.rfm_recency, best.rfm_frequency, best.rfm_monetary) == (5, 5, 5)
    assert (worst.rfm_recency, worst.rfm_frequency, worst.rfm_monetary) == (1, 1, 1)
    assert browser.rfm_recency is None
    assert best.event_count == 10
    assert best.revenue == Decimal("1000")
