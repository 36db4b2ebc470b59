"""Computed attributes as a pure fold over events (no Django), shared by the incremental
ingestion path and the rebuild-from-raw-events path, so the two cannot drift apart.

Every field except the session count is order-independent; sessions need the events in
time order, so a batch that arrives "late" (before the profile's last_seen) is answered
with a recount over the profile's whole timeline (`sessions_count`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

FOUR_PLACES = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the computed attributes need to know about one (non-bot) event."""

    timestamp: datetime
    type: str
    event: str
    revenue: Decimal
    is_purchase: bool
    weight: float


@dataclass(frozen=True, slots=True)
class StatsConfig:
    session_timeout_seconds: int
    half_life_days: float


@dataclass(frozen=True, slots=True)
class ProfileStats:
    first_seen_at: datetime | None = None
    last_seen_at: datetime | None = None
    event_count: int = 0
    session_count: int = 0
    page_view_count: int = 0
    purchase_count: int = 0
    revenue: Decimal = Decimal("0")
    avg_order_value: Decimal = Decimal("0")
    last_purchase_at: datetime | None = None
    engagement_score: float = 0.0
    engagement_as_of: datetime | None = None


STATS_FIELDS: tuple[str, ...] = tuple(ProfileStats.__dataclass_fields__)


def decay_factor(seconds: float, half_life_days: float) -> float:
    """2^(-t / half-life): the weight left after `seconds` of decay."""
    return math.pow(2.0, -seconds / (half_life_days * 86400.0))


def engagement_at(
    score: float, as_of: datetime | None, now: datetime, half_life_days: float
) -> float:
    """The stored score decayed to `now` (never grows for a past `as_of`)."""
    if as_of is None:
        return 0.0
    return score * decay_factor(max(0.0, (now - as_of).total_seconds()), half_life_days)


def sessions_count(timestamps: Iterable[datetime], timeout_seconds: int) -> int:
    """Sessions in a sorted timeline: a gap longer than the timeout starts a new one."""
    count = 0
    previous: datetime | None = None
    for ts in timestamps:
        if previous is None or (ts - previous).total_seconds() > timeout_seconds:
            count += 1
        previous = ts
    return count


def stats_apply(
    stats: ProfileStats, events: Sequence[EventFacts], config: StatsConfig
) -> tuple[ProfileStats, bool]:
    """Fold `events` (sorted by timestamp) into `stats`.

    Returns the new stats and whether the session count is exact; it is not when an
    event is older than the stored last_seen_at, and the caller must then recount.
    """
    if not events:
        return stats, True
    first, last = stats.first_seen_at, stats.last_seen_at
    sessions_exact = last is None or events[0].timestamp >= last
    sessions = stats.session_count
    previous = last
    event_count, page_views, purchases = (
        stats.event_count,
        stats.page_view_count,
        stats.purchase_count,
    )
    revenue, last_purchase = stats.revenue, stats.last_purchase_at
    score, as_of = stats.engagement_score, stats.engagement_as_of
    half_life = config.half_life_days

    for e in events:
        ts = e.timestamp
        if sessions_exact:
            if previous is None or (ts - previous).total_seconds() > config.session_timeout_seconds:
                sessions += 1
            previous = ts
        if first is None or ts < first:
            first = ts
        if last is None or ts > last:
            last = ts
        event_count += 1
        if e.type == "page":
            page_views += 1
        if e.is_purchase:
            purchases += 1
            revenue += e.revenue
            if last_purchase is None or ts > last_purchase:
                last_purchase = ts
        if e.weight:
            # The score is kept "as of" the newest weighted event; older events are
            # added already decayed, newer ones decay the score first. Order-independent.
            if as_of is None:
                score, as_of = e.weight, ts
            elif ts >= as_of:
                score = score * decay_factor((ts - as_of).total_seconds(), half_life) + e.weight
                as_of = ts
            else:
                score += e.weight * decay_factor((as_of - ts).total_seconds(), half_life)

    aov = (revenue / purchases).quantize(FOUR_PLACES) if purchases else Decimal("0")
    new = replace(
        stats,
        first_seen_at=first,
        last_seen_at=last,
        event_count=event_count,
        session_count=sessions,
        page_view_count=page_views,
        purchase_count=purchases,
        revenue=revenue.quantize(FOUR_PLACES),
        avg_order_value=aov,
        last_purchase_at=last_purchase,
        engagement_score=score,
        engagement_as_of=as_of,
    )
    return new, sessions_exact


def stats_rebuild(events: Sequence[EventFacts], config: StatsConfig) -> ProfileStats:
    """Computed attributes from a profile's whole timeline."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    stats, _ = stats_apply(ProfileStats(), ordered, config)
    return stats
