"""Wiring: merges move memberships and scores; privacy handlers; real-time refresh."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from cdp.privacy import Person, PrivacyHandler, privacy_handler_register
from profiles.models import Profile
from profiles.signals import events_ingested, profile_merging
from segments.models import Membership, ProfileScore, Segment


@receiver(profile_merging)
def segments_follow_merge(sender: type, into: Profile, other: Profile, **kwargs: Any) -> None:
    # The survivor's memberships are re-evaluated after the merge; the other's go.
    Membership.objects.filter(profile=other).delete()
    ProfileScore.objects.filter(profile=other).delete()


@receiver(post_save, sender=Segment)
@receiver(post_delete, sender=Segment)
def segments_changed(sender: type, **kwargs: Any) -> None:
    from segments.services import realtime_flag_reset

    realtime_flag_reset()


@receiver(events_ingested)
def segments_refresh_on_events(
    sender: type, profile_ids: list[Any], event_names: list[str], **kwargs: Any
) -> None:
    from segments.services import realtime_refresh_enqueue

    realtime_refresh_enqueue(profile_ids=profile_ids)
    from segments.ml.services import realtime_enqueue

    realtime_enqueue(profile_ids=profile_ids)


def _memberships_export(person: Person) -> Iterator[dict[str, Any]]:
    rows = Membership.objects.filter(profile_id__in=person.profile_ids).select_related("segment")
    for m in rows:
        yield {"segment": m.segment.slug, "name": m.segment.name, "since": m.since}


def _memberships_erase(person: Person) -> int:
    return Membership.objects.filter(profile_id__in=person.profile_ids).delete()[0]


def _scores_export(person: Person) -> Iterator[dict[str, Any]]:
    for s in ProfileScore.objects.filter(profile_id__in=person.profile_ids):
        yield {"model": s.model, "score": s.score, "computed_at": s.computed_at}


def _scores_erase(person: Person) -> int:
    return ProfileScore.objects.filter(profile_id__in=person.profile_ids).delete()[0]


privacy_handler_register(
    PrivacyHandler(
        "segment_memberships", (Membership,), _memberships_export, _memberships_erase, order=200
    )
)
privacy_handler_register(
    PrivacyHandler("scores", (ProfileScore,), _scores_export, _scores_erase, order=210)
)
