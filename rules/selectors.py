"""Reads: the compiled rule configuration, a visitor's snapshot (what rules can look at),
and how each rule performed."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.utils import timezone

from consent.selectors import gate_allowed, gate_default, purpose_default_granted, purposes_all
from rules import hooks
from rules.engine import CompiledRule, CompiledSlot
from rules.models import Decision, Rule, Slot
from segments.conditions import Facts, describe, event_names
from segments.conditions.language import max_window
from segments.selectors import profile_facts

PERSONALIZATION = "personalization"


@dataclass(frozen=True)
class RulesConfig:
    """Everything `/decide` needs that marketers configure, compiled once per version."""

    version: str
    slots: dict[str, CompiledSlot]
    event_names: frozenset[str]
    events_since_seconds: int | None  # None: a rule looks at all history
    consent_defaults: dict[str, bool] = field(default_factory=dict)
    personalization_default: bool = True
    extensions: dict[str, Any] = field(default_factory=dict)  # rules.hooks states


def _compile_rule(rule: Rule) -> CompiledRule:
    return CompiledRule(
        id=rule.pk,
        key=rule.key,
        name=rule.name,
        condition=rule.condition,
        description=describe(rule.condition),
        variant=rule.variant.key,
        priority=rule.priority,
        scoring=tuple((s["condition"], float(s["points"])) for s in rule.scoring or []),
        weight=rule.weight,
        starts_at=rule.starts_at,
        ends_at=rule.ends_at,
        cap_count=rule.frequency_cap_count if rule.frequency_cap_per else None,
        cap_per=rule.frequency_cap_per,
    )


def rules_config_load(*, version: str) -> RulesConfig:
    """Read and compile every slot with its variants and enabled rules (three queries
    and the purposes)."""
    slots = list(Slot.objects.select_related("default_variant").prefetch_related("variants"))
    rules = (
        Rule.objects.filter(enabled=True)
        .select_related("variant")
        .order_by("slot_id", "-priority", "key")
    )
    by_slot: dict[int, list[CompiledRule]] = {}
    names: set[str] = set()
    windows: list[int | None] = []
    for rule in rules:
        by_slot.setdefault(rule.slot_id, []).append(_compile_rule(rule))
        for tree in [rule.condition, *(s["condition"] for s in rule.scoring or [])]:
            names |= event_names(tree)
            windows.append(max_window(tree))
    states = hooks.states_load()
    for tree in hooks.conditions(states):  # e.g. experiments' audiences
        names |= event_names(tree)
        windows.append(max_window(tree))
    compiled = {
        s.key: CompiledSlot(
            key=s.key,
            strategy=s.strategy,
            control_percent=s.control_percent,
            default_variant=s.default_variant.key if s.default_variant else None,
            variants={v.key: v.content() for v in s.variants.all()},
            rules=tuple(by_slot.get(s.pk, [])),
            options=dict(s.recommendation or {}),
        )
        for s in slots
    }
    purposes = purposes_all()
    return RulesConfig(
        version=version,
        slots=compiled,
        event_names=frozenset(names),
        events_since_seconds=None if None in windows else max((w or 0 for w in windows), default=0),
        consent_defaults={p.code: purpose_default_granted(p) for p in purposes},
        personalization_default=gate_default(gate=PERSONALIZATION),
        extensions=states,
    )


@dataclass
class Snapshot:
    """What rules can know about one profile, cached between requests (Redis)."""

    profile_id: uuid.UUID
    facts: Facts
    personalization: bool
    config_version: str
    built_at: datetime
    epoch: str = "0"  # the snapshot epoch it was built under (rules.decide)
    generation: int = 0  # the profile's change counter it was built under (rules.decide)
    extra: dict[str, Any] = field(default_factory=dict)  # rules.hooks profile data


def snapshots_build(
    *, profile_ids: list[uuid.UUID], config: RulesConfig, now: datetime
) -> dict[uuid.UUID, Snapshot]:
    """Read live profiles' facts (traits, attributes, the events rules look at,
    segments, scores, consent) in bulk. Profiles gone or merged away are left out."""
    since = (
        None
        if config.events_since_seconds is None
        else now - timedelta(seconds=config.events_since_seconds)
    )
    facts = profile_facts(
        profile_ids=profile_ids, now=now, event_names=set(config.event_names), since=since
    )
    allowed = gate_allowed(gate=PERSONALIZATION, profile_ids=set(facts))
    extra = hooks.profile_data(facts)
    return {
        pid: Snapshot(pid, f, allowed[pid], config.version, now, extra=extra.get(pid, {}))
        for pid, f in facts.items()
    }


def snapshot_build(*, profile_id: uuid.UUID, config: RulesConfig, now: datetime) -> Snapshot | None:
    """One profile's snapshot; None when the profile is gone."""
    return snapshots_build(profile_ids=[profile_id], config=config, now=now).get(profile_id)


def unknown_visitor_facts(config: RulesConfig) -> Facts:
    """A visitor with no profile: no data, consent as the purposes' defaults."""
    return Facts(consent=dict(config.consent_defaults))


@dataclass(frozen=True)
class RulePerformance:
    rule_id: int
    key: str
    name: str
    slot: str
    impressions: int
    clicks: int
    conversions: int

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None

    @property
    def conversion_rate(self) -> float | None:
        return self.conversions / self.impressions if self.impressions else None


def rule_performance(
    *, since: datetime | None = None, rule_ids: Iterable[int] | None = None
) -> list[RulePerformance]:
    """Impressions, clicks and conversions per rule (one grouped query)."""
    qs = Decision.objects.filter(rule__isnull=False)
    if since is not None:
        qs = qs.filter(decided_at__gte=since)
    if rule_ids is not None:
        qs = qs.filter(rule_id__in=list(rule_ids))
    counts = {
        row["rule_id"]: row
        for row in qs.values("rule_id").annotate(
            impressions=Count("id"),
            clicks=Count("id", filter=Q(clicked_at__isnull=False)),
            conversions=Count("id", filter=Q(converted_at__isnull=False)),
        )
    }
    rules = Rule.objects.select_related("slot").order_by("slot__key", "-priority", "key")
    if rule_ids is not None:
        rules = rules.filter(pk__in=list(rule_ids))
    return [
        RulePerformance(
            r.pk,
            r.key,
            r.name,
            r.slot.key,
            counts.get(r.pk, {}).get("impressions", 0),
            counts.get(r.pk, {}).get("clicks", 0),
            counts.get(r.pk, {}).get("conversions", 0),
        )
        for r in rules
    ]


def rule_daily_impressions(*, rule_id: int, days: int = 30) -> list[tuple[datetime, int, int, int]]:
    """(day, impressions, clicks, conversions) for a rule's chart."""
    from django.db.models.functions import TruncDay

    since = timezone.now() - timedelta(days=days)
    rows = (
        Decision.objects.filter(rule_id=rule_id, decided_at__gte=since)
        .annotate(day=TruncDay("decided_at"))
        .values("day")
        .annotate(
            impressions=Count("id"),
            clicks=Count("id", filter=Q(clicked_at__isnull=False)),
            conversions=Count("id", filter=Q(converted_at__isnull=False)),
        )
        .order_by("day")
    )
    return [(r["day"], r["impressions"], r["clicks"], r["conversions"]) for r in rows]


def slots_unknown(keys: Iterable[str], config: RulesConfig) -> list[str]:
    return [k for k in keys if k not in config.slots]


@dataclass
class RuleTrace:
    rule: CompiledRule
    live: bool
    matched: bool
    lines: list[tuple[str, bool, str]]


@dataclass
class SlotPreview:
    slot: CompiledSlot
    decision: Any
    traces: list[RuleTrace]


def decision_preview(
    *, profile_id: uuid.UUID | None, context: dict[str, Any], now: datetime | None = None
) -> tuple[Snapshot | None, list[SlotPreview]]:
    """Every slot's decision for a profile (or an unknown visitor) and a context, with
    each rule's trace — read fresh from the database, counting nothing, logging nothing
    (frequency caps are shown as not reached)."""
    import dataclasses

    from rules.engine import decide_slot
    from segments.conditions import explain

    now = now or timezone.now()
    config = rules_config_load(version="preview")
    snap = snapshot_build(profile_id=profile_id, config=config, now=now) if profile_id else None
    base = snap.facts if snap else unknown_visitor_facts(config)
    facts = dataclasses.replace(base, context=context)
    visitor = str(snap.profile_id) if snap else "preview"
    out = []
    for slot in config.slots.values():
        decision = decide_slot(
            slot,
            facts,
            now,
            visitor=visitor,
            personalization=snap.personalization if snap else config.personalization_default,
            caps={},
            providers=hooks.providers(config.extensions, snap.extra if snap else {}),
            strategies=hooks.strategies(config.extensions, snap.extra if snap else {}),
        )
        traces = []
        for rule in slot.rules:
            lines = sorted(explain(rule.condition, facts, now), key=lambda line: line[0])
            traces.append(RuleTrace(rule, rule.live_at(now), bool(lines and lines[0][1]), lines))
        out.append(SlotPreview(slot, decision, traces))
    return snap, out


def profiles_recently_active(*, minutes: int, limit: int) -> list[uuid.UUID]:
    """Live profiles seen in the last `minutes`, most recent first."""
    from profiles.models import Profile

    since = timezone.now() - timedelta(minutes=minutes)
    return list(
        Profile.objects.filter(merged_into__isnull=True, last_seen_at__gte=since)
        .order_by("-last_seen_at")
        .values_list("pk", flat=True)[:limit]
    )
