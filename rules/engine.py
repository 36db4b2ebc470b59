"""The decision for one slot, in memory: no I/O here (rules.decide does the caching and
the logging). Order: consent → providers (running experiments) → the slot's control
group → its strategy over its rules → its default."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from segments.conditions import Facts, evaluate


@dataclass(frozen=True)
class CompiledRule:
    id: int
    key: str
    name: str
    condition: Mapping[str, Any]
    description: str
    variant: str
    priority: int
    scoring: tuple[tuple[Mapping[str, Any], float], ...] = ()
    weight: float = 1.0
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    cap_count: int | None = None
    cap_per: str = ""

    def live_at(self, now: datetime) -> bool:
        return (self.starts_at is None or self.starts_at <= now) and (
            self.ends_at is None or now < self.ends_at
        )


@dataclass(frozen=True)
class CompiledSlot:
    key: str
    strategy: str
    control_percent: float
    default_variant: str | None
    variants: Mapping[str, Mapping[str, Any]]
    rules: tuple[CompiledRule, ...]  # priority order: higher first, then key
    # strategy options (a recommendations slot's: which list, how many, diversity)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class SlotDecision:
    slot: str
    variant: str | None
    content: Mapping[str, Any]
    source: str  # rule / experiment / recommendation / default
    reason: str
    rule: CompiledRule | None = None
    experiment: dict[str, str] | None = None
    control: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The visitor's arm of a cross-slot experiment (the global holdout), whatever
    # answered: logged so both arms are exposed (rules.hooks.tag_decisions).
    tag: dict[str, str] | None = None

    def as_json(self, decision_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": self.variant,
            "content": self.content,
            "source": self.source,
            "reason": self.reason,
            "decision_id": decision_id,
        }
        if self.rule is not None:
            out["rule"] = self.rule.key
        if self.experiment is not None:
            out["experiment"] = self.experiment
        out.update(self.extra)
        return out


# A provider may answer for a slot before its rules: running experiments register one
# (rules.hooks). It gets the slot, the visitor's facts, the time and the visitor's key.
Provider = Callable[[CompiledSlot, Facts, datetime, str], SlotDecision | None]
# A slot strategy an extension implements (rules.hooks): it answers a slot of its
# strategy when no rule matched; the last argument says whether personalization is
# allowed (without it, a strategy may still answer with something impersonal).
SlotStrategy = Callable[[CompiledSlot, Facts, datetime, str, bool], SlotDecision | None]


def cap_key(visitor: str, rule: CompiledRule, now: datetime) -> str:
    """The counter of a capped rule's impressions for a visitor in the current period."""
    if rule.cap_per == "day":
        period = f"{now.year}-{now.month:02d}-{now.day:02d}"
    elif rule.cap_per == "week":
        year, week, _ = now.isocalendar()
        period = f"{year}w{week:02d}"
    else:  # session: the counter expires after the session timeout of inactivity
        period = "session"
    return f"cdp:fcap:{visitor}:{rule.id}:{period}"


def cap_ttl(rule: CompiledRule, session_timeout: int) -> int:
    return {"day": 2 * 86400, "week": 8 * 86400}.get(rule.cap_per, session_timeout)


def in_control(slot: CompiledSlot, visitor: str) -> bool:
    """Sticky: the same visitor is in (or out of) a slot's control group every time."""
    if slot.control_percent <= 0:
        return False
    digest = hashlib.blake2b(f"control:{slot.key}:{visitor}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < slot.control_percent * 100


def default_decision(slot: CompiledSlot, reason: str, *, control: bool = False) -> SlotDecision:
    """The slot's default variant (or none), saying why."""
    if slot.default_variant is None:
        return SlotDecision(
            slot.key,
            None,
            {},
            "default",
            f"{reason}; the slot has no default variant",
            control=control,
        )
    return SlotDecision(
        slot.key,
        slot.default_variant,
        slot.variants.get(slot.default_variant, {}),
        "default",
        f"{reason}: default variant",
        control=control,
    )


def _score(rule: CompiledRule, facts: Facts, now: datetime) -> float:
    return sum(points for cond, points in rule.scoring if evaluate(cond, facts, now))


def decide_slot(
    slot: CompiledSlot,
    facts: Facts,
    now: datetime,
    *,
    visitor: str,
    personalization: bool,
    caps: Mapping[str, int],
    providers: Sequence[Provider] = (),
    strategies: Mapping[str, SlotStrategy] | None = None,
    rng: random.Random | None = None,
) -> SlotDecision:
    strategy = (strategies or {}).get(slot.strategy)
    if not personalization:
        answer = strategy(slot, facts, now, visitor, False) if strategy else None
        return answer or default_decision(slot, "no personalization consent")
    for provider in providers:
        answer = provider(slot, facts, now, visitor)
        if answer is not None:
            return answer
    if in_control(slot, visitor):
        return default_decision(
            slot, f"control group ({slot.control_percent:g}% of visitors)", control=True
        )
    skipped: list[str] = []
    matching: list[CompiledRule] = []
    for rule in slot.rules:
        if not rule.live_at(now):
            continue
        if (
            rule.cap_count is not None
            and caps.get(cap_key(visitor, rule, now), 0) >= rule.cap_count
        ):
            skipped.append(f"'{rule.name}' reached its cap of {rule.cap_count} per {rule.cap_per}")
            continue
        if evaluate(rule.condition, facts, now):
            matching.append(rule)
            if slot.strategy not in ("score_sorted", "random"):
                break  # first match (a strategy's slot tries its rules first-match too)
    if not matching:
        tried = sum(1 for r in slot.rules if r.live_at(now))
        why = f"no rule matched ({tried} tried)"
        if skipped:
            why += "; " + "; ".join(skipped)
        answer = strategy(slot, facts, now, visitor, True) if strategy else None
        if answer is not None:
            if slot.rules:
                answer.reason = f"{why}; {answer.reason}"
            return answer
        return default_decision(slot, why)
    if slot.strategy == "score_sorted":
        scored = sorted(
            ((_score(r, facts, now), r) for r in matching),
            key=lambda sr: (-sr[0], -sr[1].priority, sr[1].key),
        )
        score, chosen = scored[0]
        note = f" (score {score:g}, highest of {len(matching)} matching)"
    elif slot.strategy == "random":
        weights = [max(r.weight, 0.0) for r in matching]
        pick = rng or random
        chosen = (
            pick.choices(matching, weights=weights)[0]
            if sum(weights) > 0
            else pick.choice(matching)
        )
        note = f" (picked at random among {len(matching)} matching)" if len(matching) > 1 else ""
    else:
        chosen, note = matching[0], ""
    if skipped:
        note += " — skipped " + "; ".join(skipped)
    return SlotDecision(
        slot.key,
        chosen.variant,
        slot.variants.get(chosen.variant, {}),
        "rule",
        f"rule '{chosen.name}' matched: {chosen.description}{note}",
        rule=chosen,
    )
