"""Writes for sources, profiles and computed attributes. Ingestion lives in ingestion.py."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from cdp.errors import Conflict, ValidationFailed
from profiles import keys
from profiles.attributes import event_facts, stats_config, stats_set
from profiles.models import Event, Identity, IdentityKind, Profile, ProfileMerge, Source
from profiles.signals import profile_merging
from profiles.stats import STATS_FIELDS, EventFacts, ProfileStats, sessions_count, stats_rebuild

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceKeys:
    """Raw keys: exist only in the answer to the call that made them."""

    source: Source
    write_key: str
    secret_key: str


def _keys_set(source: Source) -> tuple[str, str]:
    write_key = keys.key_generate(keys.WRITE_PREFIX)
    secret_key = keys.key_generate(keys.SECRET_PREFIX)
    source.write_key_hash = keys.key_digest(write_key)
    source.write_key_prefix = write_key[:10]
    source.secret_key_hash = keys.key_digest(secret_key)
    source.secret_key_prefix = secret_key[:10]
    return write_key, secret_key


def source_create(
    *,
    name: str,
    slug: str | None = None,
    allowed_origins: list[str] | None = None,
    require_identity_verification: bool = False,
) -> SourceKeys:
    """Create a source with fresh keys; the raw keys are returned once and never stored."""
    slug = slug or slugify(name)
    if not slug:
        raise ValidationFailed(
            "name: must contain letters or digits", details={"name": ["empty slug"]}
        )
    if Source.objects.filter(slug=slug).exists():
        raise Conflict(f"slug: a source named {slug!r} exists already", details={"slug": ["taken"]})
    origins = allowed_origins or []
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise ValidationFailed(
                f"allowed_origins: {origin!r} is not an origin like https://shop.example",
                details={"allowed_origins": [f"{origin!r} is not an origin"]},
            )
    source = Source(
        name=name,
        slug=slug,
        allowed_origins=[o.rstrip("/") for o in origins],
        require_identity_verification=require_identity_verification,
        identity_secret=keys.key_generate(keys.IDENTITY_PREFIX),
    )
    write_key, secret_key = _keys_set(source)
    source.save()
    return SourceKeys(source=source, write_key=write_key, secret_key=secret_key)


CONSOLE_SOURCE_SLUG = "console"


def source_console_ensure() -> Source:
    """The built-in source staff sessions send through, so dedup stays per source."""
    source = Source.objects.filter(slug=CONSOLE_SOURCE_SLUG).first()
    if source is None:
        source = source_create(name="Console (staff)", slug=CONSOLE_SOURCE_SLUG).source
    return source


def source_keys_rotate(*, source: Source, grace_seconds: int = 0) -> SourceKeys:
    """Replace both keys. Without grace the old ones stop working within the key cache's
    lifetime; with it they keep working for `grace_seconds` (plus that lifetime), so a
    storefront can be redeployed with the new write key without a gap. One previous
    generation is kept, so a second rotation with grace while one runs is refused (it
    would retire the keys the shop may still be deploying); one without grace ends it."""
    now = timezone.now()
    running = source.previous_keys_expire_at is not None and source.previous_keys_expire_at > now
    if grace_seconds > 0 and running:
        raise Conflict(
            f"Source {source.slug!r} is in a key rotation grace period until "
            f"{source.previous_keys_expire_at:%Y-%m-%d %H:%M} UTC; rotate without grace to "
            "end it (both older key pairs stop working)."
        )
    if grace_seconds > 0:
        source.previous_write_key_hash = source.write_key_hash
        source.previous_secret_key_hash = source.secret_key_hash
        source.previous_keys_expire_at = now + timedelta(seconds=grace_seconds)
    else:
        source.previous_write_key_hash = source.previous_secret_key_hash = ""
        source.previous_keys_expire_at = None
    write_key, secret_key = _keys_set(source)
    source.save(
        update_fields=[
            "write_key_hash",
            "write_key_prefix",
            "secret_key_hash",
            "secret_key_prefix",
            "previous_write_key_hash",
            "previous_secret_key_hash",
            "previous_keys_expire_at",
        ]
    )
    return SourceKeys(source=source, write_key=write_key, secret_key=secret_key)


# --- Merging --------------------------------------------------------------------------


class MergeRefused(Conflict):
    code = "merge_refused"


def _user_ids(profile_id: uuid.UUID) -> set[str]:
    return set(
        Identity.objects.filter(profile_id=profile_id, kind=IdentityKind.USER_ID).values_list(
            "value", flat=True
        )
    )


def traits_merge(
    traits: dict, stamps: dict, other_traits: dict, other_stamps: dict
) -> tuple[dict, dict]:
    """Per trait, the value set by the newest event wins (ties keep the surviving profile's)."""
    merged, merged_stamps = dict(traits), dict(stamps)
    for key, value in other_traits.items():
        theirs = other_stamps.get(key, "")
        if key not in merged or theirs > merged_stamps.get(key, ""):
            merged[key] = value
            merged_stamps[key] = theirs
    return merged, merged_stamps


def profile_merge(*, into: Profile, other: Profile, reason: str) -> Profile:
    """Move everything `other` holds into `into` and leave `other` as a tombstone.

    Refuses (MergeRefused) when both own a user_id: two known people are never merged.
    Locks both rows in id order, so concurrent merges and ingestion cannot interleave.
    """
    if into.pk == other.pk:
        return into
    with transaction.atomic():
        locked = {
            p.pk: p
            for p in Profile.objects.select_for_update()
            .filter(pk__in=[into.pk, other.pk])
            .order_by("pk")
        }
        into, other = locked[into.pk], locked[other.pk]
        if other.merged_into_id is not None or into.merged_into_id is not None:
            raise MergeRefused("one of the profiles was merged already; retry with the live one")
        mine, theirs = _user_ids(into.pk), _user_ids(other.pk)
        if mine and theirs and mine != theirs:
            # Profile ids only: logs never carry identifiers.
            logger.warning(
                "merge refused: profiles %s and %s own different user ids", into.pk, other.pk
            )
            raise MergeRefused(
                "both profiles belong to different identified users; they are never merged",
                details={"profiles": [str(into.pk), str(other.pk)]},
            )
        moved = list(Identity.objects.filter(profile=other).values_list("kind", "value"))
        Identity.objects.filter(profile=other).update(profile=into)
        Event.objects.filter(profile=other).update(profile=into)
        into.traits, into.trait_timestamps = traits_merge(
            into.traits, into.trait_timestamps, other.traits, other.trait_timestamps
        )
        profile_merging.send(sender=Profile, into=into, other=other)
        ProfileMerge.objects.create(
            into=into,
            other_id=other.pk,
            reason=reason,
            other_traits=other.traits,
            moved_identities=[list(m) for m in moved],
        )
        Profile.objects.filter(merged_into=other).update(merged_into=into)
        other.merged_into = into
        # The tombstone keeps nothing that could be counted twice (RFM, reports).
        stats_set(other, ProfileStats())
        other.traits, other.trait_timestamps = {}, {}
        other.rfm_recency = other.rfm_frequency = other.rfm_monetary = None
        other.save()
        into.save()
        profile_stats_rebuild(profile_ids=[into.pk])
        into.refresh_from_db()
    return into


# --- Computed attributes --------------------------------------------------------------

_FACT_FIELDS = ("profile_id", "type", "event", "properties", "timestamp")


def _facts_rows(rows: Iterator[tuple]) -> Iterator[tuple[uuid.UUID, EventFacts]]:
    for profile_id, type_, name, properties, ts in rows:
        yield (
            profile_id,
            event_facts(type=type_, event=name, properties=properties or {}, timestamp=ts),
        )


def profile_sessions_recount(*, profile_id: uuid.UUID) -> int:
    """Sessions over the whole stored timeline (used when events arrive out of order)."""
    timestamps = (
        Event.objects.filter(profile_id=profile_id, is_bot=False)
        .order_by("timestamp")
        .values_list("timestamp", flat=True)
    )
    return sessions_count(
        timestamps.iterator(chunk_size=5000), stats_config().session_timeout_seconds
    )


def profile_stats_rebuild(*, profile_ids: list[uuid.UUID]) -> None:
    """Recompute computed attributes of these (live) profiles from their raw events.

    Locks each profile first, so events ingested meanwhile are either counted here or
    applied after, and writes only the computed fields (never traits or merged_into)."""
    config = stats_config()
    with transaction.atomic():
        profiles = (
            Profile.objects.select_for_update(no_key=True)
            .filter(pk__in=profile_ids, merged_into__isnull=True)
            .order_by("pk")
        )
        for profile in profiles:
            rows = (
                Event.objects.filter(profile_id=profile.pk, is_bot=False)
                .order_by("timestamp")
                .values_list(*_FACT_FIELDS)
            )
            facts = [f for _, f in _facts_rows(iter(rows.iterator(chunk_size=5000)))]
            stats_set(profile, stats_rebuild(facts, config))
            profile.save(update_fields=[*STATS_FIELDS, "updated_at"])


def profiles_stats_rebuild_all(
    *, chunk_profiles: int = 2000, progress: Callable[[int], object] | None = None
) -> int:
    """Rebuild every live profile's computed attributes, chunk by chunk (bounded memory)."""
    config = stats_config()
    done = 0
    last_id: uuid.UUID | None = None
    fields = [
        "first_seen_at",
        "last_seen_at",
        "event_count",
        "session_count",
        "page_view_count",
        "purchase_count",
        "revenue",
        "avg_order_value",
        "last_purchase_at",
        "engagement_score",
        "engagement_as_of",
    ]
    while True:
        qs = Profile.objects.filter(merged_into__isnull=True).order_by("pk")
        if last_id is not None:
            qs = qs.filter(pk__gt=last_id)
        with transaction.atomic():
            # Lock the chunk before reading its events: an event ingested meanwhile
            # waits, then updates the rebuilt values incrementally.
            chunk = list(qs.select_for_update(no_key=True)[:chunk_profiles])
            if not chunk:
                return done
            last_id = chunk[-1].pk
            by_profile: dict[uuid.UUID, list[EventFacts]] = {p.pk: [] for p in chunk}
            rows = (
                Event.objects.filter(profile_id__in=by_profile.keys(), is_bot=False)
                .order_by("profile_id", "timestamp")
                .values_list(*_FACT_FIELDS)
            )
            for pid, facts in _facts_rows(iter(rows.iterator(chunk_size=5000))):
                by_profile[pid].append(facts)
            for profile in chunk:
                stats_set(profile, stats_rebuild(by_profile[profile.pk], config))
            Profile.objects.bulk_update(chunk, fields, batch_size=500)
        done += len(chunk)
        if progress:
            progress(len(chunk))


def rfm_scores_compute(*, now: datetime | None = None) -> int:
    """RFM quintiles (1..5, higher is better) over profiles with at least one purchase.

    One set-based UPDATE (window functions), so it runs in the database for any size.
    Profiles without purchases get NULL scores.
    """
    now = now or timezone.now()
    table = Profile._meta.db_table
    # CEIL(CUME_DIST * 5) gives ties the same score, unlike NTILE.
    ranked = f"""
        SELECT id,
               CAST(CEIL(CUME_DIST() OVER (ORDER BY last_purchase_at) * 5) AS INTEGER) AS r,
               CAST(CEIL(CUME_DIST() OVER (ORDER BY purchase_count) * 5) AS INTEGER) AS f,
               CAST(CEIL(CUME_DIST() OVER (ORDER BY revenue) * 5) AS INTEGER) AS m
        FROM {table}
        WHERE purchase_count > 0 AND merged_into_id IS NULL
    """  # noqa: S608
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET rfm_recency = NULL, rfm_frequency = NULL, rfm_monetary = NULL, "  # noqa: S608
            f"rfm_computed_at = %s WHERE purchase_count = 0 AND rfm_recency IS NOT NULL",
            [now],
        )
        cursor.execute(
            f"UPDATE {table} SET rfm_recency = ranked.r, rfm_frequency = ranked.f, "  # noqa: S608
            f"rfm_monetary = ranked.m, rfm_computed_at = %s FROM ({ranked}) AS ranked "
            f"WHERE {table}.id = ranked.id",
            [now],
        )
        return int(cursor.rowcount)


def profile_identities_q(kind: str, value: str) -> Q:
    return Q(identities__kind=kind, identities__value=value)
