"""Writes: slots with their variants, rules (validated, audited, and every change makes
all processes reload their compiled rules), snapshot invalidation, the decision log and
its outcomes."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import nh3
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import (
    DateTimeField,
    ExpressionWrapper,
    OuterRef,
    ProtectedError,
    Subquery,
    Value,
)
from django.utils import timezone

from cdp.audit import audit_record
from cdp.errors import Conflict, ValidationFailed
from profiles.models import Event
from rules import hooks
from rules.models import CapPeriod, ContentVariant, Decision, Rule, Slot, Strategy
from rules.signals import decisions_logged
from segments.services import condition_check

logger = logging.getLogger(__name__)

VERSION_KEY = "cdp:rules:version"
EPOCH_KEY = "cdp:snapshot:epoch"


# --- Cache invalidation --------------------------------------------------------------------


def config_changed() -> None:
    """After the transaction commits, give the configuration a new version: every
    process sees it on its next `/decide` and recompiles."""

    def bump() -> None:
        try:
            cache.set(VERSION_KEY, uuid.uuid4().hex, None)
        except Exception:  # Redis down: processes reload on their short timer instead
            logger.warning("could not publish the rules version", exc_info=True)

    transaction.on_commit(bump)


def snapshots_invalidate(*, profile_ids: Iterable[Any]) -> None:
    """Forget the cached snapshots of these profiles (they changed)."""
    from rules.decide import snapshots_forget

    snapshots_forget(profile_ids=profile_ids)


def snapshots_retire_all() -> None:
    """Retire every snapshot at once (after a batch recompute changed many profiles)."""
    try:
        cache.set(EPOCH_KEY, uuid.uuid4().hex, None)
    except Exception:
        logger.warning("could not retire snapshots", exc_info=True)


# --- Slots and variants --------------------------------------------------------------------

VARIANT_FIELDS = ("title", "body", "image_url", "cta_label", "cta_url", "data", "html")


def html_sanitize(html: str) -> str:
    """Only harmless markup survives: no scripts, event handlers or javascript: links."""
    return nh3.clean(html) if html else ""


def _slot_check(slot: Slot) -> None:
    problems: dict[str, list[str]] = {}
    if slot.strategy not in Strategy.values:
        problems["strategy"] = [f"one of {', '.join(Strategy.values)}"]
    if not 0.0 <= float(slot.control_percent) <= 100.0:
        problems["control_percent"] = ["between 0 and 100"]
    if not isinstance(slot.recommendation, dict):
        problems["recommendation"] = ["an object"]
    elif slot.strategy == Strategy.RECOMMENDATIONS:
        for name, reasons in hooks.strategy_options_problems(
            slot.strategy, slot.recommendation
        ).items():
            problems[f"recommendation.{name}"] = reasons
    if problems:
        field, reasons = next(iter(problems.items()))
        raise ValidationFailed(f"{field}: must be {reasons[0]}", details=problems)


def slot_save(
    *,
    slot: Slot,
    actor: str,
    variants: list[dict[str, Any]] | None = None,
    default_variant: str | None = None,
) -> Slot:
    """Create or update a slot; with `variants`, they become exactly the slot's variants
    (matched by key; a variant a rule still shows cannot be removed). `default_variant`
    names one of them by key."""
    _slot_check(slot)
    created = slot.pk is None
    with transaction.atomic():
        slot.save()
        if variants is not None:
            keys = [v.get("key") for v in variants]
            dupes = sorted({k for k in keys if keys.count(k) > 1 and k})
            if dupes:
                raise ValidationFailed(
                    f"variants: duplicate key(s) {', '.join(dupes)}",
                    details={"variants": [f"duplicate key(s): {', '.join(dupes)}"]},
                )
            existing = {v.key: v for v in slot.variants.all()}
            for data in variants:
                variant = existing.get(data["key"]) or ContentVariant(slot=slot, key=data["key"])
                for name in VARIANT_FIELDS:
                    if name in data:
                        setattr(variant, name, data[name])
                variant.html = html_sanitize(variant.html)
                variant.save()
            gone = [v for k, v in existing.items() if k not in keys]
            used = sorted(
                {
                    r.variant.key
                    for r in Rule.objects.filter(variant__in=gone).select_related("variant")
                }
            )
            if used:
                raise ValidationFailed(
                    f"variants: {', '.join(used)} still shown by rules; change those rules first",
                    details={"variants": [f"in use by rules: {', '.join(used)}"]},
                )
            ContentVariant.objects.filter(pk__in=[v.pk for v in gone]).delete()
            slot.refresh_from_db(fields=["default_variant"])  # a removed default is cleared
        if default_variant is not None:
            chosen = slot.variants.filter(key=default_variant).first() if default_variant else None
            if default_variant and chosen is None:
                raise ValidationFailed(
                    f"default_variant: the slot has no variant {default_variant!r}",
                    details={"default_variant": [f"no variant {default_variant!r} in this slot"]},
                )
            slot.default_variant = chosen
            slot.save(update_fields=["default_variant", "updated_at"])
        elif (
            slot.default_variant_id
            and slot.default_variant
            and slot.default_variant.slot_id != slot.pk
        ):
            raise ValidationFailed(
                "default_variant: must be one of the slot's own variants",
                details={"default_variant": ["not a variant of this slot"]},
            )
        audit_record(
            actor=actor,
            action="slot.created" if created else "slot.updated",
            object_type="rules.slot",
            object_id=slot.pk,
            details={
                "key": slot.key,
                "strategy": slot.strategy,
                "recommendation": slot.recommendation,
                "control_percent": slot.control_percent,
                "default_variant": slot.default_variant.key if slot.default_variant else None,
                "variants": sorted(slot.variants.values_list("key", flat=True)),
            },
        )
        config_changed()
    return slot


def slot_delete(*, slot: Slot, actor: str) -> None:
    """Delete a slot with its variants and rules; refused (Conflict) while anything else
    (an experiment) runs on it."""
    with transaction.atomic():
        pk, key = slot.pk, slot.key
        Slot.objects.filter(pk=pk).update(default_variant=None)
        Rule.objects.filter(slot_id=pk).delete()
        try:
            slot.delete()
        except ProtectedError as exc:  # rolled back with the transaction
            users = ", ".join(sorted(str(o) for o in exc.protected_objects))
            raise Conflict(
                f"slot: in use by {users}; delete or move those first",
                details={"slot": [f"in use by {users}"]},
            ) from exc
        audit_record(
            actor=actor,
            action="slot.deleted",
            object_type="rules.slot",
            object_id=pk,
            details={"key": key},
        )
        config_changed()


def variant_save(*, variant: ContentVariant, actor: str) -> ContentVariant:
    """One variant edited on its own (the admin's inline)."""
    variant.html = html_sanitize(variant.html)
    with transaction.atomic():
        created = variant.pk is None
        variant.save()
        audit_record(
            actor=actor,
            action="variant.created" if created else "variant.updated",
            object_type="rules.contentvariant",
            object_id=variant.pk,
            details={"slot": variant.slot.key, "key": variant.key},
        )
        config_changed()
    return variant


# --- Rules ---------------------------------------------------------------------------------


def rule_check(rule: Rule) -> None:
    """Everything a rule needs to be served; ValidationFailed names the field (and for a
    condition, the node)."""
    condition_check(rule.condition, allow_context=True)
    if not isinstance(rule.scoring, list):
        raise ValidationFailed("scoring: must be a list", details={"scoring": ["must be a list"]})
    for i, item in enumerate(rule.scoring):
        where = f"scoring[{i}]"
        if not isinstance(item, dict) or set(item) != {"condition", "points"}:
            raise ValidationFailed(
                f'{where}: must be {{"condition": …, "points": n}}',
                details={where: ['must be {"condition": …, "points": n}']},
            )
        points = item["points"]
        if isinstance(points, bool) or not isinstance(points, int | float):
            raise ValidationFailed(
                f"{where}.points: must be a number", details={f"{where}.points": ["a number"]}
            )
        condition_check(item["condition"], allow_context=True, field=f"{where}.condition")
    if rule.variant_id is not None and rule.slot_id is not None:
        variant = (
            ContentVariant.objects.filter(pk=rule.variant_id)
            .values_list("slot_id", flat=True)
            .first()
        )
        if variant != rule.slot_id:
            raise ValidationFailed(
                "variant: must be a variant of the rule's slot",
                details={"variant": ["not a variant of this slot"]},
            )
    if rule.starts_at and rule.ends_at and rule.ends_at <= rule.starts_at:
        raise ValidationFailed(
            "ends_at: must be after starts_at", details={"ends_at": ["must be after starts_at"]}
        )
    if (rule.frequency_cap_count is None) != (not rule.frequency_cap_per):
        raise ValidationFailed(
            "frequency_cap: needs both a count and a period",
            details={"frequency_cap": ["give both count and per"]},
        )
    if rule.frequency_cap_per and rule.frequency_cap_per not in CapPeriod.values:
        raise ValidationFailed(
            f"frequency_cap.per: must be one of {', '.join(CapPeriod.values)}",
            details={"frequency_cap.per": [f"one of {', '.join(CapPeriod.values)}"]},
        )
    if rule.frequency_cap_count is not None and rule.frequency_cap_count < 1:
        raise ValidationFailed(
            "frequency_cap.count: must be at least 1", details={"frequency_cap.count": ["≥ 1"]}
        )


def rule_save(*, rule: Rule, actor: str) -> Rule:
    rule_check(rule)
    created = rule.pk is None
    with transaction.atomic():
        rule.save()
        audit_record(
            actor=actor,
            action="rule.created" if created else "rule.updated",
            object_type="rules.rule",
            object_id=rule.pk,
            details={
                "key": rule.key,
                "slot": rule.slot.key,
                "variant": rule.variant.key,
                "priority": rule.priority,
                "enabled": rule.enabled,
                "condition": rule.condition,
            },
        )
        config_changed()
    return rule


def rule_delete(*, rule: Rule, actor: str) -> None:
    with transaction.atomic():
        pk, key = rule.pk, rule.key
        rule.delete()
        audit_record(
            actor=actor,
            action="rule.deleted",
            object_type="rules.rule",
            object_id=pk,
            details={"key": key},
        )
        config_changed()


def rules_reorder(*, slot: Slot, keys: list[str], actor: str) -> list[Rule]:
    """Give the slot's rules priorities in this order (first = highest); rules not named
    keep their relative order below them."""
    rules = {r.key: r for r in slot.rules.all()}
    unknown = [k for k in keys if k not in rules]
    if unknown:
        raise ValidationFailed(
            f"keys: not rules of slot {slot.key}: {', '.join(unknown)}",
            details={"keys": [f"not in this slot: {', '.join(unknown)}"]},
        )
    rest = [
        r.key
        for r in sorted(rules.values(), key=lambda r: (-r.priority, r.key))
        if r.key not in keys
    ]
    order = [*keys, *rest]
    with transaction.atomic():
        for i, key in enumerate(order):
            rule = rules[key]
            rule.priority = (len(order) - i) * 10
            rule.save(update_fields=["priority", "updated_at"])
        audit_record(
            actor=actor,
            action="rules.reordered",
            object_type="rules.slot",
            object_id=slot.pk,
            details={"order": order},
        )
        config_changed()
    return [rules[k] for k in order]


# --- Decision log and outcomes --------------------------------------------------------------


def decisions_write(*, rows: list[dict[str, Any]]) -> None:
    """Store logged decisions (idempotent by id) and announce them (`decisions_logged`:
    experiments record exposures from them), in one transaction."""
    with transaction.atomic():
        Decision.objects.bulk_create(
            [Decision(**row) for row in rows], batch_size=1000, ignore_conflicts=True
        )
        decisions_logged.send(sender=Decision, rows=rows)


def decisions_attribute(
    *, now: datetime | None = None, lookback: timedelta | None = None
) -> dict[str, int]:
    """Join outcomes to decisions: a click event (or a purchase) that names a decision in
    `properties.decision_id`, and any purchase by the same profile within the attribution
    window after a decision. Set-based; safe to run repeatedly (beat, every minute)."""
    now = now or timezone.now()
    cdp = settings.CDP
    window = timedelta(seconds=cdp["DECISION_ATTRIBUTION_SECONDS"])
    lookback = lookback or timedelta(hours=1)
    recent = Event.objects.filter(timestamp__gte=now - lookback, timestamp__lte=now, type="track")
    clicked = converted = 0
    for names, column in (
        (cdp["DECISION_CLICK_EVENTS"], "clicked_at"),
        (cdp["PURCHASE_EVENTS"], "converted_at"),
    ):
        named: dict[str, datetime] = {}
        for props, ts in recent.filter(
            event__in=names, properties__has_key="decision_id"
        ).values_list("properties", "timestamp"):
            raw = props.get("decision_id")
            try:
                key = str(uuid.UUID(str(raw)))
            except ValueError:
                continue
            named[key] = min(ts, named.get(key, ts))
        for key, ts in named.items():
            n = Decision.objects.filter(pk=key, **{f"{column}__isnull": True}).update(
                **{column: ts}
            )
            if column == "clicked_at":
                clicked += n
            else:
                converted += n
    first_purchase = (
        Event.objects.filter(
            profile_id=OuterRef("profile_id"),
            type="track",
            event__in=cdp["PURCHASE_EVENTS"],
            is_bot=False,
            timestamp__gt=OuterRef("decided_at"),
            timestamp__lte=ExpressionWrapper(
                OuterRef("decided_at") + Value(window), output_field=DateTimeField()
            ),
        )
        .order_by("timestamp")
        .values("timestamp")[:1]
    )
    pending = Decision.objects.filter(
        converted_at__isnull=True,
        profile_id__isnull=False,
        decided_at__gte=now - window - lookback,
        kind__in=["rule", "experiment", "default", "recommendation"],
    )
    matched = pending.annotate(purchase_at=Subquery(first_purchase)).filter(
        purchase_at__isnull=False
    )
    converted += Decision.objects.filter(pk__in=matched.values("pk")).update(
        converted_at=Subquery(first_purchase)
    )
    return {"clicked": clicked, "converted": converted}
