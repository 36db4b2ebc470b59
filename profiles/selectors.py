"""Reads for sources, profiles and events."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.utils import timezone

from cdp.metrics import source_key_hits, source_key_misses
from profiles import keys
from profiles.models import Event, Identity, IdentityKind, Profile, Source
from profiles.stats import engagement_at


@dataclass(frozen=True, slots=True)
class SourceCredential:
    """What a valid API key says about its caller."""

    source_id: int
    source_slug: str
    kind: str  # "write" or "secret"
    allowed_origins: tuple[str, ...]
    require_identity_verification: bool
    identity_secret: str

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"


_KEY_CACHE: OrderedDict[str, tuple[float, SourceCredential | None]] = OrderedDict()
_KEY_CACHE_MAX = 10_000


def source_credential(*, raw_key: str) -> SourceCredential | None:
    """The credential for a raw key, or None. Cached in-process for a few seconds so the
    hot endpoints do not read the database per request; rotation takes effect after that."""
    digest = keys.key_digest(raw_key)
    now = time.monotonic()
    hit = _KEY_CACHE.get(digest)
    if hit is not None and hit[0] > now:
        _KEY_CACHE.move_to_end(digest)
        source_key_hits.inc()
        return hit[1]
    source_key_misses.inc()
    cred: SourceCredential | None = None
    source: Source | None = None
    kind = ""
    if raw_key.startswith(keys.WRITE_PREFIX):
        kind, current, previous = "write", "write_key_hash", "previous_write_key_hash"
    elif raw_key.startswith(keys.SECRET_PREFIX):
        kind, current, previous = "secret", "secret_key_hash", "previous_secret_key_hash"
    if kind:
        active = Source.objects.filter(is_active=True)
        source = active.filter(**{current: digest}).first()
        if source is None:  # a key rotated with a grace period that has not ended
            source = active.filter(
                **{previous: digest}, previous_keys_expire_at__gt=timezone.now()
            ).first()
    if source is not None:
        cred = SourceCredential(
            source_id=source.pk,
            source_slug=source.slug,
            kind=kind,
            allowed_origins=tuple(source.allowed_origins or ()),
            require_identity_verification=source.require_identity_verification,
            identity_secret=source.identity_secret,
        )
    # Bounded LRU: a spray of made-up keys evicts only the least recently used entries.
    _KEY_CACHE[digest] = (now + settings.CDP["SOURCE_KEY_CACHE_SECONDS"], cred)
    _KEY_CACHE.move_to_end(digest)
    while len(_KEY_CACHE) > _KEY_CACHE_MAX:
        _KEY_CACHE.popitem(last=False)
    return cred


def source_credential_cached(*, raw_key: str) -> SourceCredential | None:
    """The credential for a raw key if this process knows it as valid already, without
    reading the database (None: unknown, invalid, or expired from the cache)."""
    hit = _KEY_CACHE.get(keys.key_digest(raw_key))
    return hit[1] if hit is not None and hit[0] > time.monotonic() else None


def source_key_cache_clear() -> None:
    _KEY_CACHE.clear()


def profile_live(*, profile_id: uuid.UUID) -> Profile | None:
    """The live profile for an id, following a merge tombstone."""
    profile = Profile.objects.filter(pk=profile_id).first()
    if profile is not None and profile.merged_into_id is not None:
        profile = Profile.objects.filter(pk=profile.merged_into_id).first()
    return profile


def profile_by_identity(*, kind: str, value: str) -> Profile | None:
    if kind == IdentityKind.EMAIL:
        value = keys.pii_hash(settings.CDP["PII_HASH_KEY"], value)
    identity = Identity.objects.select_related("profile").filter(kind=kind, value=value).first()
    return identity.profile if identity else None


def profile_search(*, term: str) -> list[uuid.UUID]:
    """Profile ids matching a raw identity (any kind, email hashed) or a profile id."""
    term = term.strip()
    ids: set[uuid.UUID] = set()
    with contextlib.suppress(ValueError):
        ids.add(uuid.UUID(term))
    values = [term, keys.pii_hash(settings.CDP["PII_HASH_KEY"], term)]
    ids.update(Identity.objects.filter(value__in=values).values_list("profile_id", flat=True))
    return list(ids)


def profile_detail(*, profile: Profile) -> dict[str, Any]:
    """Everything the API and the admin show about a profile."""
    half_life = settings.CDP["ENGAGEMENT_HALF_LIFE_DAYS"]
    identities = list(
        Identity.objects.filter(profile=profile)
        .order_by("kind", "created_at")
        .values("kind", "value", "created_at")
    )
    return {
        "id": profile.pk,
        "traits": profile.traits,
        "computed": {
            "first_seen_at": profile.first_seen_at,
            "last_seen_at": profile.last_seen_at,
            "event_count": profile.event_count,
            "session_count": profile.session_count,
            "page_view_count": profile.page_view_count,
            "purchase_count": profile.purchase_count,
            "revenue": str(profile.revenue),
            "avg_order_value": str(profile.avg_order_value),
            "last_purchase_at": profile.last_purchase_at,
            "engagement_score": round(
                engagement_at(
                    profile.engagement_score, profile.engagement_as_of, timezone.now(), half_life
                ),
                6,
            ),
            "rfm": {
                "recency": profile.rfm_recency,
                "frequency": profile.rfm_frequency,
                "monetary": profile.rfm_monetary,
                "computed_at": profile.rfm_computed_at,
            },
        },
        "identities": identities,
        "merged_from": [str(m) for m in profile.merges.values_list("other_id", flat=True)],
        "segments": _segments_of(profile),
        "scores": _scores_of(profile),
        "created_at": profile.created_at,
    }


def _segments_of(profile: Profile) -> list[dict[str, Any]]:
    # Read through the app registry: segments build on profiles, not the other way round.
    from django.apps import apps

    membership = apps.get_model("segments", "Membership")
    rows = (
        membership.objects.filter(profile=profile)
        .select_related("segment")
        .order_by("segment__slug")
    )
    return [{"slug": m.segment.slug, "name": m.segment.name, "since": m.since} for m in rows]


def _scores_of(profile: Profile) -> list[dict[str, Any]]:
    """Model scores: predictors' probabilities, clusterings' cluster numbers."""
    from django.apps import apps

    score = apps.get_model("segments", "ProfileScore")
    rows = score.objects.filter(profile=profile).order_by("model")
    return [{"model": r.model, "score": r.score, "computed_at": r.computed_at} for r in rows]


def profile_events_recent(*, profile: Profile, limit: int = 50) -> list[Event]:
    return list(Event.objects.filter(profile=profile).order_by("-timestamp")[:limit])
