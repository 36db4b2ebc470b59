"""Glue between the pure stats fold (stats.py) and the Profile rows."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from profiles.models import Profile
from profiles.stats import (
    FOUR_PLACES,
    STATS_FIELDS,
    EventFacts,
    ProfileStats,
    StatsConfig,
)


def stats_config() -> StatsConfig:
    cdp = settings.CDP
    return StatsConfig(
        session_timeout_seconds=int(cdp["SESSION_TIMEOUT_SECONDS"]),
        half_life_days=float(cdp["ENGAGEMENT_HALF_LIFE_DAYS"]),
    )


REVENUE_KEYS = ("revenue", "total", "value")
MAX_ABS_REVENUE = Decimal("1e12")


def _revenue_raw(properties: Mapping[str, Any]) -> tuple[str, Decimal] | None:
    """The first of revenue/total/value that holds a number, with its key."""
    for key in REVENUE_KEYS:
        raw = properties.get(key)
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            continue
        try:
            return key, Decimal(str(raw).strip())
        except InvalidOperation:
            continue
    return None


def revenue_problem(properties: Mapping[str, Any]) -> tuple[str, str] | None:
    """(field, message) when a purchase's revenue cannot be counted, else None."""
    found = _revenue_raw(properties)
    if found is None:
        return None
    key, value = found
    if not value.is_finite() or abs(value) > MAX_ABS_REVENUE:
        return (
            f"properties.{key}",
            f"must be a finite number of at most {MAX_ABS_REVENUE:,.0f} in size",
        )
    return None


def _revenue(properties: Mapping[str, Any]) -> Decimal:
    found = _revenue_raw(properties)
    if found is None:
        return Decimal("0")
    value = found[1]
    if not value.is_finite() or abs(value) > MAX_ABS_REVENUE:
        return Decimal("0")  # refused at ingestion; only old rows can hold such values
    return value.quantize(FOUR_PLACES)


def event_facts(
    *, type: str, event: str, properties: Mapping[str, Any], timestamp: datetime
) -> EventFacts:
    """The facts the computed attributes use, with the configured purchase events/weights."""
    cdp = settings.CDP
    is_purchase = type == "track" and event in cdp["PURCHASE_EVENTS"]
    weights: Mapping[str, float] = cdp["ENGAGEMENT_WEIGHTS"]
    weight = (
        weights.get(event, weights.get(type, 0.0)) if type == "track" else weights.get(type, 0.0)
    )
    return EventFacts(
        timestamp=timestamp,
        type=type,
        event=event,
        revenue=_revenue(properties) if is_purchase else Decimal("0"),
        is_purchase=is_purchase,
        weight=float(weight),
    )


def trait_stamp(at: datetime) -> str:
    """How a trait remembers when it was set: UTC, fixed width, so strings compare as times."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def stats_of(profile: Profile) -> ProfileStats:
    return ProfileStats(**{f: getattr(profile, f) for f in STATS_FIELDS})


def stats_set(profile: Profile, stats: ProfileStats) -> None:
    for field in STATS_FIELDS:
        setattr(profile, field, getattr(stats, field))
