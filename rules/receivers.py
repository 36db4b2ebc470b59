"""Wiring: cached snapshots follow profile changes; decisions follow merges; privacy
handlers for the decision log; segments used by rules cannot be deleted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils import timezone

from cdp.privacy import Person, PrivacyHandler, privacy_handler_register
from consent.models import Purpose
from consent.signals import consent_changed
from profiles.models import Identity, Profile
from profiles.signals import events_ingested, profile_merging
from rules import services
from rules.engine import CompiledRule, cap_key
from rules.models import Decision, Rule
from segments.conditions import referenced_segments
from segments.signals import (
    memberships_changed,
    scores_changed,
    segment_usage,
    segments_recomputed,
)


@receiver(events_ingested)
def snapshots_follow_events(sender: type, profile_ids: list[Any], **kwargs: Any) -> None:
    services.snapshots_invalidate(profile_ids=profile_ids)


@receiver(memberships_changed)
def snapshots_follow_memberships(sender: type, profile_ids: list[Any], **kwargs: Any) -> None:
    transaction.on_commit(lambda: services.snapshots_invalidate(profile_ids=profile_ids))


@receiver(segments_recomputed)
def snapshots_follow_recompute(sender: type, **kwargs: Any) -> None:
    from rules.tasks import snapshots_warm_recent

    def retire_and_rewarm() -> None:
        services.snapshots_retire_all()
        snapshots_warm_recent.delay()

    transaction.on_commit(retire_and_rewarm)


@receiver(scores_changed)
def snapshots_follow_scores(
    sender: type, profile_ids: list[Any] | None = None, **kwargs: Any
) -> None:
    # Snapshots hold each profile's scores (rules may compare them directly).
    if profile_ids is None:
        snapshots_follow_recompute(sender)
    else:
        ids = list(profile_ids)
        transaction.on_commit(lambda: services.snapshots_invalidate(profile_ids=ids))


@receiver(consent_changed)
def snapshots_follow_consent(sender: type, profile_ids: list[Any], **kwargs: Any) -> None:
    transaction.on_commit(lambda: services.snapshots_invalidate(profile_ids=profile_ids))


@receiver(post_save, sender=Purpose)
def config_follows_purposes(sender: type, **kwargs: Any) -> None:
    services.config_changed()  # purpose defaults are part of the compiled configuration


@receiver(profile_merging)
def decisions_follow_merge(sender: type, into: Profile, other: Profile, **kwargs: Any) -> None:
    from rules.decide import identities_forget

    Decision.objects.filter(profile_id=other.pk).update(profile_id=into.pk)
    ids = [into.pk, other.pk]
    # The merged profile's identities now point at `into`: cached lookups must go.
    pairs = list(Identity.objects.filter(profile_id__in=ids).values_list("kind", "value"))

    def forget() -> None:
        services.snapshots_invalidate(profile_ids=ids)
        identities_forget(pairs=pairs)

    transaction.on_commit(forget)


@receiver(segment_usage)
def segments_used_by_rules(sender: type, slug: str, **kwargs: Any) -> list[str]:
    return sorted(
        f"rule {r.key}"
        for r in Rule.objects.only("key", "condition", "scoring")
        if slug in referenced_segments(r.condition)
        or any(slug in referenced_segments(s["condition"]) for s in r.scoring or [])
    )


def _decisions_export(person: Person) -> Iterator[dict[str, Any]]:
    for d in Decision.objects.filter(profile_id__in=person.profile_ids).order_by("decided_at"):
        yield {
            "decided_at": d.decided_at,
            "slot": d.slot,
            "variant": d.variant,
            "kind": d.kind,
            "rule": d.rule_key,
            "experiment": d.experiment,
            "experiment_variant": d.experiment_variant,
            "reason": d.reason,
            "clicked_at": d.clicked_at,
            "converted_at": d.converted_at,
        }


def _decisions_erase(person: Person) -> int:
    # The rows stay for rule statistics, no longer linked to anyone.
    return Decision.objects.filter(profile_id__in=person.profile_ids).update(profile_id=None)


def _cap_counters(person: Person) -> Iterator[str]:
    """The frequency counters that name the person (this and the previous period)."""
    now = timezone.now()
    capped = list(Rule.objects.filter(frequency_cap_count__isnull=False))
    units = [
        f"{kind[0]}:{value}"
        for kind, value in person.identities
        if kind in ("user_id", "anonymous_id")
    ]
    for unit in units:
        for rule in capped:
            compiled = CompiledRule(
                id=rule.pk,
                key=rule.key,
                name=rule.name,
                condition={},
                description="",
                variant="",
                priority=0,
                cap_count=rule.frequency_cap_count,
                cap_per=rule.frequency_cap_per,
            )
            for at in (now, now - timedelta(days=1), now - timedelta(days=7)):
                yield cap_key(unit, compiled, at)


privacy_handler_register(
    PrivacyHandler(
        "decisions",
        (Decision,),
        _decisions_export,
        _decisions_erase,
        cache_keys=_cap_counters,
        order=220,
    )
)
