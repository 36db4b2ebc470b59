"""Reads: what the in-memory evaluator needs to know about profiles."""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from consent.selectors import consent_granted
from profiles.models import Event, Profile
from segments.compiler import TYPE_EVENTS
from segments.conditions import EventFact, Facts
from segments.models import Membership, ProfileScore, RecomputeRun

_TYPE_NAMES = {v: k for k, v in TYPE_EVENTS.items()}
_PLAIN_ATTRS = (
    "event_count",
    "session_count",
    "page_view_count",
    "purchase_count",
    "revenue",
    "avg_order_value",
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
)


def _days_since(ts: datetime | None, now: datetime) -> int | None:
    if ts is None:
        return None
    return math.floor((now - ts).total_seconds() / 86400)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def engagement_value(score: float, as_of: datetime | None, now: datetime) -> float:
    """The `engagement_score` attribute: the stored score decayed to `now` on a clock of
    whole seconds, rounded down to 0.01 — the compiler does the same arithmetic in SQL,
    so both sides agree exactly, even at a threshold."""
    if as_of is None:
        return 0.0
    elapsed = max(
        0,
        (now - _EPOCH) // timedelta(seconds=1) - (as_of - _EPOCH) // timedelta(seconds=1),
    )
    half_life = settings.CDP["ENGAGEMENT_HALF_LIFE_DAYS"] * 86400.0
    return math.floor(score * math.pow(2.0, float(-elapsed) / half_life) * 100.0) / 100.0


def profile_facts(
    *,
    profile_ids: Iterable[uuid.UUID],
    now: datetime,
    event_names: set[str] | None = None,
    since: datetime | None = None,
) -> dict[uuid.UUID, Facts]:
    """Facts for these live profiles. Events are limited to `event_names` and `since`
    when given (what the conditions being evaluated can look at)."""
    ids = list(profile_ids)
    profiles = {p.pk: p for p in Profile.objects.filter(pk__in=ids, merged_into__isnull=True)}
    out: dict[uuid.UUID, Facts] = {}
    for pid, p in profiles.items():
        attrs: dict[str, Any] = {name: getattr(p, name) for name in _PLAIN_ATTRS}
        attrs["days_since_first_seen"] = _days_since(p.first_seen_at, now)
        attrs["days_since_last_seen"] = _days_since(p.last_seen_at, now)
        attrs["days_since_last_purchase"] = _days_since(p.last_purchase_at, now)
        attrs["engagement_score"] = engagement_value(p.engagement_score, p.engagement_as_of, now)
        out[pid] = Facts(
            traits=p.traits, attrs=attrs, events=[], segments=set(), scores={}, consent={}
        )
    if not out:
        return out
    events = Event.objects.filter(profile_id__in=out.keys(), is_bot=False, timestamp__lte=now)
    if since is not None:
        events = events.filter(timestamp__gte=since)
    if event_names is not None:
        tracks = [n for n in event_names if n not in TYPE_EVENTS]
        types = [TYPE_EVENTS[n] for n in event_names if n in TYPE_EVENTS]
        from django.db.models import Q

        events = events.filter(Q(type="track", event__in=tracks) | Q(type__in=types))
    for pid, type_, name, ts, props in events.values_list(
        "profile_id", "type", "event", "timestamp", "properties"
    ).iterator(chunk_size=5000):
        key = name if type_ == "track" else _TYPE_NAMES.get(type_, f"${type_}")
        out[pid].events.append(EventFact(key, ts, props or {}))
    for pid, slug in Membership.objects.filter(profile_id__in=out.keys()).values_list(
        "profile_id", "segment__slug"
    ):
        out[pid].segments.add(slug)
    scores: dict[uuid.UUID, dict[str, float]] = defaultdict(dict)
    for pid, model, score in ProfileScore.objects.filter(profile_id__in=out.keys()).values_list(
        "profile_id", "model", "score"
    ):
        scores[pid][model] = score
    consent = consent_granted(profile_ids=out.keys(), now=now)
    for pid, facts in out.items():
        facts.scores = scores.get(pid, {})
        facts.consent = consent.get(pid, {})
    return out


def recompute_runs_recent(limit: int = 5) -> list[RecomputeRun]:
    """The latest batch recomputes, newest first (the admin's progress panel)."""
    return list(RecomputeRun.objects.all()[:limit])
