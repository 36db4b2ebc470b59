"""What the profiles app holds about a person, for access exports and erasure."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import Q

from cdp.privacy import Person, PrivacyHandler, privacy_handler_register
from profiles.models import ErasedIdentity, Event, Identity, Profile, ProfileMerge

_EVENT_FIELDS = (
    "message_id",
    "type",
    "event",
    "anonymous_id",
    "user_id",
    "timestamp",
    "original_timestamp",
    "sent_at",
    "received_at",
    "properties",
    "traits",
    "context",
    "is_bot",
    "source__slug",
)


def _profiles_export(person: Person) -> Iterator[dict[str, Any]]:
    for p in Profile.objects.filter(pk__in=person.profile_ids).order_by("created_at"):
        yield {
            "id": str(p.pk),
            "merged_into": str(p.merged_into_id) if p.merged_into_id else None,
            "traits": p.traits,
            "created_at": p.created_at,
            "computed": {
                "first_seen_at": p.first_seen_at,
                "last_seen_at": p.last_seen_at,
                "event_count": p.event_count,
                "session_count": p.session_count,
                "page_view_count": p.page_view_count,
                "purchase_count": p.purchase_count,
                "revenue": str(p.revenue),
                "avg_order_value": str(p.avg_order_value),
                "last_purchase_at": p.last_purchase_at,
                "engagement_score": p.engagement_score,
                "rfm": [p.rfm_recency, p.rfm_frequency, p.rfm_monetary],
            },
        }


def _profiles_erase(person: Person) -> int:
    ids = list(person.profile_ids)
    # Tombstones first (they point at the live profile), then the live ones.
    deleted, _ = Profile.objects.filter(pk__in=ids, merged_into__isnull=False).delete()
    more, _ = Profile.objects.filter(pk__in=ids).delete()
    return deleted + more


def _identities_export(person: Person) -> Iterator[dict[str, Any]]:
    rows = Identity.objects.filter(profile_id__in=person.profile_ids).order_by("kind", "created_at")
    for kind, value, created in rows.values_list("kind", "value", "created_at"):
        yield {
            "kind": kind,
            "value": value,
            "created_at": created,
            "note": "keyed hash" if kind in ("email", "phone") else "",
        }


def _identities_erase(person: Person) -> int:
    return Identity.objects.filter(profile_id__in=person.profile_ids).delete()[0]


def _events_export(person: Person) -> Iterator[dict[str, Any]]:
    rows = Event.objects.filter(profile_id__in=person.profile_ids).order_by("timestamp", "id")
    for row in rows.values(*_EVENT_FIELDS).iterator(chunk_size=2000):
        row["source"] = row.pop("source__slug")
        yield row


def _events_erase(person: Person) -> int:
    deleted, _ = Event.objects.filter(profile_id__in=person.profile_ids).delete()
    # Their ids can also sit on other people's events (a shared device): scrub them there.
    raw = person.raw_identifiers
    if raw:
        Event.objects.filter(anonymous_id__in=raw).update(anonymous_id=None)
        Event.objects.filter(user_id__in=raw).update(user_id=None)
    return deleted


def _merges_export(person: Person) -> Iterator[dict[str, Any]]:
    rows = ProfileMerge.objects.filter(into_id__in=person.profile_ids).order_by("merged_at")
    for m in rows:
        yield {
            "into": str(m.into_id),
            "other": str(m.other_id),
            "reason": "merge",
            "other_traits": m.other_traits,
            "moved_identities": m.moved_identities,
            "merged_at": m.merged_at,
        }


def _merges_erase(person: Person) -> int:
    q = Q(into_id__in=person.profile_ids) | Q(other_id__in=person.profile_ids)
    return ProfileMerge.objects.filter(q).delete()[0]


def profile_cache_key(profile_id: object) -> str:
    """The cache key convention for data about one profile (later apps use these, so
    erasure finds them): "cdp:profile:<id>" and "cdp:identity:<kind>:<value>"."""
    return f"cdp:profile:{profile_id}"


def identity_cache_key(kind: str, value: str) -> str:
    return f"cdp:identity:{kind}:{value}"


def _cache_keys(person: Person) -> Iterator[str]:
    for pid in person.profile_ids:
        yield profile_cache_key(pid)
    for kind, value in person.identities:
        yield identity_cache_key(kind, value)


def register() -> None:
    privacy_handler_register(
        PrivacyHandler("events", (Event,), _events_export, _events_erase, order=800)
    )
    privacy_handler_register(
        PrivacyHandler("merges", (ProfileMerge,), _merges_export, _merges_erase, order=850)
    )
    privacy_handler_register(
        PrivacyHandler("identities", (Identity,), _identities_export, _identities_erase, order=900)
    )
    privacy_handler_register(
        PrivacyHandler(
            "profiles",
            (Profile,),
            _profiles_export,
            _profiles_erase,
            order=1000,
            cache_keys=_cache_keys,
            # Holds only keyed hashes of erased identities, by design (the tombstone).
            also_covers=(ErasedIdentity,),
        )
    )
