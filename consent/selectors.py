"""Reads: the current consent state (derived from the history), requests."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from consent.models import ConsentRecord, Default, Gate, Purpose


@dataclass(frozen=True)
class PurposeState:
    code: str
    granted: bool
    basis: str  # "recorded" or "default"
    recorded_at: datetime | None = None
    policy_version: str | None = None
    source: str | None = None
    expires_at: datetime | None = None


def purposes_all() -> list[Purpose]:
    return list(Purpose.objects.all())


def purpose_default_granted(purpose: Purpose) -> bool:
    if settings.CDP["CONSENT_ALL_OPT_IN"]:
        return False
    return purpose.default == Default.OPT_OUT


def _current_records(
    profile_ids: Iterable[uuid.UUID], purpose_ids: Iterable[int], now: datetime
) -> dict[tuple[uuid.UUID, int], ConsentRecord]:
    """Newest unexpired record per (profile, purpose): one indexed query, read fresh
    every time (no cache), so a withdrawal applies to the very next request."""
    latest: dict[tuple[uuid.UUID, int], ConsentRecord] = {}
    rows = (
        ConsentRecord.objects.filter(
            profile_id__in=list(profile_ids), purpose_id__in=list(purpose_ids)
        )
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("profile_id", "purpose_id", "-recorded_at", "-id")
    )
    for record in rows:
        latest.setdefault((record.profile_id, record.purpose_id), record)
    return latest


def consent_state(*, profile_id: uuid.UUID | None) -> dict[str, PurposeState]:
    """Every purpose's current state for a profile (defaults for None or no history)."""
    purposes = purposes_all()
    now = timezone.now()
    records = _current_records([profile_id], [p.pk for p in purposes], now) if profile_id else {}
    out: dict[str, PurposeState] = {}
    for purpose in purposes:
        record = records.get((profile_id, purpose.pk)) if profile_id else None
        if record is None:
            out[purpose.code] = PurposeState(
                purpose.code, purpose_default_granted(purpose), "default"
            )
        else:
            out[purpose.code] = PurposeState(
                purpose.code,
                record.granted,
                "recorded",
                record.recorded_at,
                record.policy_version,
                record.source,
                record.expires_at,
            )
    return out


def consent_granted(
    *, profile_ids: Iterable[uuid.UUID], now: datetime
) -> dict[uuid.UUID, dict[str, bool]]:
    """Per profile, whether each purpose is granted now (defaults where no record)."""
    ids = list(profile_ids)
    purposes = purposes_all()
    records = _current_records(ids, [p.pk for p in purposes], now)
    return {
        pid: {
            p.code: records[(pid, p.pk)].granted
            if (pid, p.pk) in records
            else purpose_default_granted(p)
            for p in purposes
        }
        for pid in ids
    }


def consent_allows(*, profile_id: uuid.UUID | None, purpose: str) -> bool:
    """Whether the purpose is granted now (unknown purposes are never granted)."""
    state = consent_state(profile_id=profile_id).get(purpose)
    return bool(state and state.granted)


def gate_decisions(*, gate: str, profile_ids: set[uuid.UUID]) -> tuple[dict[uuid.UUID, bool], bool]:
    """Per profile, are all purposes that gate this processing granted; and the decision
    for someone with no history. Two queries at most, read fresh every time."""
    purposes = [p for p in Purpose.objects.filter(gates=gate)]
    default = all(purpose_default_granted(p) for p in purposes)
    if not purposes or not profile_ids:
        return dict.fromkeys(profile_ids, default), default
    records = _current_records(profile_ids, [p.pk for p in purposes], timezone.now())
    out: dict[uuid.UUID, bool] = {}
    for pid in profile_ids:
        out[pid] = all(
            records[(pid, p.pk)].granted if (pid, p.pk) in records else purpose_default_granted(p)
            for p in purposes
        )
    return out, default


def gate_allowed(*, gate: str, profile_ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
    """Per profile: are all purposes that gate this processing granted?"""
    return gate_decisions(gate=gate, profile_ids=profile_ids)[0]


def gate_default(*, gate: str) -> bool:
    """The decision for someone with no history."""
    return all(purpose_default_granted(p) for p in purposes_all() if p.gates == gate)


def gate_in(*, gate: str, purposes: dict[str, bool]) -> bool | None:
    """What a consent payload says about a gate: None when it names none of its purposes."""
    codes = [p.code for p in purposes_all() if p.gates == gate]
    said = [purposes[c] for c in codes if c in purposes]
    if not said:
        return None
    return all(said)


TRACKING = Gate.TRACKING
