"""Event ingestion: validate, resolve identities, store durably, update computed attributes.

One batch is one transaction: when the API answers 202, every accepted event is
committed. The hot path is set-based: one identity lookup, one multi-row profile and
identity insert, one multi-row event insert that skips (source, message_id) duplicates,
one locked read and one write of the touched profiles, whatever the batch size.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

import orjson
import psycopg
from crawlerdetect import CrawlerDetect
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Q
from jsonschema import Draft202012Validator

from cdp.metrics import events_accepted, events_dropped, events_duplicates, events_rejected
from profiles import hooks as ingest_hooks
from profiles import keys
from profiles.attributes import (
    event_facts,
    revenue_problem,
    stats_config,
    stats_of,
    stats_set,
    trait_stamp,
)
from profiles.hooks import CarriedConsent
from profiles.models import (
    ErasedIdentity,
    Event,
    EventSchema,
    Identity,
    IdentityKind,
    Profile,
    SchemaMode,
)
from profiles.services import (
    MergeRefused,
    profile_merge,
    profile_sessions_recount,
)
from profiles.signals import events_ingested
from profiles.stats import StatsConfig, stats_apply
from profiles.validation import EPOCH, MAX_YEAR, EventIn, event_validate

logger = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class IngestContext:
    """Who is sending: the source, and whether its claims of user_id are trusted."""

    source_id: int
    identity_secret: str
    require_identity_verification: bool
    trusted: bool  # secret key or staff: the caller vouches for user_id
    received_at: datetime
    browser_user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]]
    profile_ids: list[uuid.UUID] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count, never stored


@dataclass(slots=True)
class _Prepared:
    index: int
    message_id: str
    type: str
    event: str
    anonymous_id: str | None
    user_id: str | None  # as sent
    resolve_user_id: str | None  # trusted or verified: may link/merge
    previous_id: str | None
    timestamp: datetime
    original_timestamp: datetime | None
    sent_at: datetime | None
    properties: dict[str, Any]
    traits: dict[str, Any]
    context: dict[str, Any]
    is_bot: bool
    warnings: list[str] | None
    email_hash: str | None
    phone_hash: str | None = None
    consent: dict[str, Any] | None = None  # context.consent carried by the event
    profile_id: uuid.UUID | None = None

    def identity_keys(self) -> list[Key]:
        keys_: list[Key] = []
        if self.resolve_user_id:
            keys_.append((IdentityKind.USER_ID.value, self.resolve_user_id))
        if self.anonymous_id:
            keys_.append((IdentityKind.ANONYMOUS_ID.value, self.anonymous_id))
        if self.email_hash:
            keys_.append((IdentityKind.EMAIL.value, self.email_hash))
        if self.phone_hash:
            keys_.append((IdentityKind.PHONE.value, self.phone_hash))
        return keys_


# --- Event schemas (per event name), cached briefly in-process ----------------------

_SCHEMA_TTL_SECONDS = 10.0
_schema_cache: tuple[float, dict[str, tuple[Draft202012Validator, str]]] | None = None


def schemas_invalidate() -> None:
    global _schema_cache
    _schema_cache = None


def _schemas() -> dict[str, tuple[Draft202012Validator, str]]:
    global _schema_cache
    now = time.monotonic()
    if _schema_cache is None or now - _schema_cache[0] > _SCHEMA_TTL_SECONDS:
        compiled = {
            s.event: (Draft202012Validator(s.schema), s.mode)
            for s in EventSchema.objects.filter(enabled=True)
        }
        _schema_cache = (now, compiled)
    return _schema_cache[1]


# --- Bots --------------------------------------------------------------------------

_crawler_detect = CrawlerDetect()


@lru_cache(maxsize=20_000)
def user_agent_is_bot(user_agent: str) -> bool:
    return bool(_crawler_detect.isCrawler(user_agent))


# --- Preparation (per event, no database) ----------------------------------------------


def _prepare(
    index: int,
    ev: EventIn,
    ctx: IngestContext,
    schemas: dict[str, tuple[Draft202012Validator, str]],
) -> _Prepared | dict[str, list[str]]:
    cdp = settings.CDP
    received_at = ctx.received_at

    resolve_uid = ev.user_id
    traits = ev.traits
    if ev.user_id is not None and not ctx.trusted and ctx.require_identity_verification:
        if ev.user_hash is None:
            if ev.anonymous_id is None or ev.type == "alias":
                return {"user_hash": ["required: this source verifies user_id with user_hash"]}
            resolve_uid = None  # unverified: kept on the event and as a trait, never linked
            if ev.type == "identify":
                traits = {**traits, "unverified_user_id": ev.user_id}
        elif not keys.user_hash_valid(ctx.identity_secret, ev.user_id, ev.user_hash):
            return {"user_hash": ["does not match user_id"]}

    if ev.type == "track" and ev.event in cdp["PURCHASE_EVENTS"]:
        problem = revenue_problem(ev.properties)
        if problem is not None:
            return {problem[0]: [problem[1]]}

    warnings: list[str] | None = None
    if ev.type == "track" and ev.event in schemas:
        validator, mode = schemas[ev.event]
        problems = list(validator.iter_errors(ev.properties))
        if problems:
            by_path: dict[str, list[str]] = {}
            for p in problems:
                path = ".".join(["properties", *(str(x) for x in p.absolute_path)])
                by_path.setdefault(path, []).append(p.message)
            if mode == SchemaMode.STRICT:
                return by_path
            warnings = [f"{k}: {m}" for k, msgs in by_path.items() for m in msgs]

    # Clock skew, Segment's way: shift the client's timestamp by received_at - sent_at.
    timestamp = ev.timestamp or received_at
    original: datetime | None = None
    if ev.timestamp is not None and ev.sent_at is not None and ev.sent_at != received_at:
        original = ev.timestamp
        try:
            timestamp = ev.timestamp + (received_at - ev.sent_at)
            in_range = timestamp >= EPOCH and timestamp.year < MAX_YEAR
        except OverflowError:
            in_range = False
        if not in_range:
            return {"sent_at": ["too far from the server's clock to correct timestamp with it"]}
    if timestamp > received_at + timedelta(seconds=cdp["MAX_FUTURE_SKEW_SECONDS"]):
        original = original or ev.timestamp
        timestamp = received_at

    context = ev.context
    ua = context.get("user_agent") or context.get("userAgent") or ctx.browser_user_agent
    is_bot = isinstance(ua, str) and bool(ua) and user_agent_is_bot(ua)

    carried = context.get("consent")
    if carried is not None:
        hooks = ingest_hooks.consent_hooks
        consent_problems = hooks.validate_carried(carried) if hooks else None
        if consent_problems:
            return consent_problems

    pii_key = cdp["PII_HASH_KEY"]
    # An email or phone becomes an identity (a lookup key) only from a caller we believe:
    # on a verifying source, an unverified browser cannot claim someone's address.
    believed = ctx.trusted or not ctx.require_identity_verification or resolve_uid is not None
    email = traits.get("email") if ev.type == "identify" and believed else None
    email_hash = keys.pii_hash(pii_key, email) if isinstance(email, str) and "@" in email else None
    phone = traits.get("phone") if ev.type == "identify" and believed else None
    phone_hash = (
        keys.phone_hash(pii_key, phone)
        if isinstance(phone, str) and sum(c.isdigit() for c in phone) >= 5
        else None
    )
    if not cdp["RAW_PII"]:
        traits, context = _pseudonymize(traits, context, pii_key)
    if ev.type == "track":
        name = ev.event or ""
    elif ev.type in ("page", "screen"):
        name = ev.name or ""
    else:
        name = ev.type
    return _Prepared(
        index=index,
        message_id=ev.message_id or str(uuid.uuid4()),
        type=ev.type,
        event=name,
        anonymous_id=ev.anonymous_id,
        user_id=ev.user_id,
        resolve_user_id=resolve_uid,
        previous_id=ev.previous_id,
        timestamp=timestamp,
        original_timestamp=original,
        sent_at=ev.sent_at,
        properties=ev.properties,
        traits=traits,
        context=context,
        is_bot=is_bot,
        warnings=warnings,
        email_hash=email_hash,
        phone_hash=phone_hash,
        consent=carried if isinstance(carried, dict) else None,
    )


def _pseudonymize(
    traits: dict[str, Any], context: dict[str, Any], pii_key: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw email/phone/IP replaced by "hmac:<keyed hash>" in what is stored."""

    def scrub(values: dict[str, Any]) -> dict[str, Any]:
        out = dict(values)
        for name in settings.CDP["PII_TRAITS"]:
            raw = out.get(name)
            if isinstance(raw, str) and not raw.startswith("hmac:"):
                hashed = (
                    keys.phone_hash(pii_key, raw)
                    if name == "phone"
                    else keys.pii_hash(pii_key, raw)
                )
                out[name] = f"hmac:{hashed}"
        return out

    if any(name in traits for name in settings.CDP["PII_TRAITS"]):
        traits = scrub(traits)
    nested = context.get("traits")
    if "ip" in context or isinstance(nested, dict):
        context = dict(context)
        if isinstance(context.get("ip"), str):
            context["ip"] = f"hmac:{keys.pii_hash(pii_key, context['ip'])}"
        if isinstance(nested, dict):
            context["traits"] = scrub(nested)
    return traits, context


_NUL = b"\\u0000"


def _screen_errors(payload: Any) -> dict[str, list[str]] | None:
    """Checks that need the serialized event: its size, and NUL characters, which
    PostgreSQL cannot store in text or jsonb (named by the top-level field)."""
    limit = settings.CDP["MAX_EVENT_BYTES"]
    raw = orjson.dumps(payload)
    if len(raw) > limit:
        return {"non_field_errors": [f"event is larger than {limit} bytes"]}
    if _NUL in raw and isinstance(payload, dict):
        return {
            str(key).replace("\x00", "\\u0000"): [
                "contains a NUL character (\\u0000), which cannot be stored"
            ]
            for key, value in payload.items()
            if _NUL in orjson.dumps(key) or _NUL in orjson.dumps(value)
        }
    return None


# --- Identity resolution -----------------------------------------------------------


class _Retry(Exception):
    """A concurrent transaction changed what this batch resolved; run it again."""


class _Resolver:
    """Maps identity keys to profiles for one batch, creating and merging as needed."""

    def __init__(self, source_id: int) -> None:
        self.source_id = source_id
        self.ids: dict[Key, uuid.UUID] = {}
        self.owners: dict[uuid.UUID, set[str]] = defaultdict(set)  # profile -> user_ids
        self.new_profiles: set[uuid.UUID] = set()
        self.new_identities: dict[Key, uuid.UUID] = {}
        self.remap: dict[uuid.UUID, uuid.UUID] = {}

    def final(self, pid: uuid.UUID) -> uuid.UUID:
        while pid in self.remap:
            pid = self.remap[pid]
        return pid

    def load(self, keys_: Iterable[Key]) -> None:
        by_kind: dict[str, set[str]] = defaultdict(set)
        for kind, value in keys_:
            by_kind[kind].add(value)
        if not by_kind:
            return
        q = Q()
        for kind, values in by_kind.items():
            q |= Q(kind=kind, value__in=values)
        for kind, value, pid in Identity.objects.filter(q).values_list(
            "kind", "value", "profile_id"
        ):
            self.ids[(kind, value)] = pid
        if IdentityKind.USER_ID not in by_kind:
            return  # no event claims a user_id: who owns which user_id cannot matter
        pids = set(self.ids.values())
        for pid, uid in Identity.objects.filter(
            profile_id__in=pids, kind=IdentityKind.USER_ID
        ).values_list("profile_id", "value"):
            self.owners[pid].add(uid)

    def lookup(self, key: Key | None) -> uuid.UUID | None:
        if key is None:
            return None
        pid = self.ids.get(key)
        return self.final(pid) if pid is not None else None

    def new_profile(self) -> uuid.UUID:
        pid = uuid.uuid4()
        self.new_profiles.add(pid)
        return pid

    def attach(self, key: Key | None, pid: uuid.UUID) -> None:
        if key is None or self.lookup(key) is not None:
            return
        self.ids[key] = pid
        self.new_identities[key] = pid
        if key[0] == IdentityKind.USER_ID:
            self.owners[pid].add(key[1])

    def join(self, user_pid: uuid.UUID, other_pid: uuid.UUID, reason: str) -> uuid.UUID:
        """Fold `other` into the user's profile; returns the profile the event belongs to."""
        if user_pid == other_pid:
            return user_pid
        mine, theirs = self.owners[user_pid], self.owners[other_pid]
        if theirs and theirs != mine:
            logger.warning("merge refused: %s and %s own different user ids", user_pid, other_pid)
            return user_pid
        if other_pid in self.new_profiles or user_pid in self.new_profiles:
            # One side only exists in this batch: fold it in memory, no rows to move.
            keep, drop = (
                (other_pid, user_pid) if user_pid in self.new_profiles else (user_pid, other_pid)
            )
            if drop in self.new_profiles:
                self.remap[drop] = keep
                self.owners[keep] |= self.owners.pop(drop, set())
                self.new_profiles.discard(drop)
                return keep
        try:
            into = profile_merge(
                into=Profile.objects.get(pk=user_pid),
                other=Profile.objects.get(pk=other_pid),
                reason=reason,
            )
        except Profile.DoesNotExist as exc:
            raise _Retry("profile erased concurrently") from exc
        except MergeRefused:
            return user_pid
        self.remap[other_pid] = into.pk
        self.owners[into.pk] |= self.owners.pop(other_pid, set())
        return into.pk

    def resolve(self, p: _Prepared) -> uuid.UUID:
        uid_key = (IdentityKind.USER_ID.value, p.resolve_user_id) if p.resolve_user_id else None
        anon_key = (IdentityKind.ANONYMOUS_ID.value, p.anonymous_id) if p.anonymous_id else None
        up, ap = self.lookup(uid_key), self.lookup(anon_key)
        if p.type == "alias" and p.previous_id and p.resolve_user_id:
            prev = self.lookup((IdentityKind.USER_ID.value, p.previous_id)) or self.lookup(
                (IdentityKind.ANONYMOUS_ID.value, p.previous_id)
            )
            if prev is not None:
                if up is None:
                    up = prev if not self.owners[prev] else None
                else:
                    up = self.join(up, prev, f"alias {p.previous_id} -> {p.resolve_user_id}")
        if up is None and ap is None:
            pid = self.new_profile()
        elif up is None:
            assert ap is not None
            pid = ap
            if p.resolve_user_id and self.owners[ap] and p.resolve_user_id not in self.owners[ap]:
                # A shared device: this anonymous id already belongs to another user.
                pid = self.new_profile()
        elif ap is None or ap == up:
            pid = up
        else:
            pid = self.join(up, ap, f"identify {p.anonymous_id} as {p.resolve_user_id}")
        pid = self.final(pid)
        self.attach(uid_key, pid)
        self.attach(anon_key, pid)
        if p.email_hash:
            self.attach((IdentityKind.EMAIL.value, p.email_hash), pid)
        if p.phone_hash:
            self.attach((IdentityKind.PHONE.value, p.phone_hash), pid)
        return pid

    def persist(self) -> None:
        """Insert new profiles and identities; adopt rows a concurrent batch won."""
        live_new = sorted((self.final(p) for p in self.new_profiles), key=str)
        if live_new:
            Profile.objects.bulk_create([Profile(id=pid) for pid in set(live_new)])
        if not self.new_identities:
            return
        wanted = {k: self.final(v) for k, v in sorted(self.new_identities.items())}
        Identity.objects.bulk_create(
            [
                Identity(kind=k, value=v, profile_id=pid, source_id=self.source_id)
                for (k, v), pid in wanted.items()
            ],
            ignore_conflicts=True,
        )
        q = Q()
        for kind, value in wanted:
            q |= Q(kind=kind, value=value)
        actual = {
            (k, v): pid
            for k, v, pid in Identity.objects.filter(q).values_list("kind", "value", "profile_id")
        }
        lost = {k: actual[k] for k, pid in wanted.items() if actual.get(k) != pid}
        if not lost:
            return
        # A concurrent batch created some of these identities first (two first events of
        # one new user at once): fold our brand-new profile into theirs.
        for key, winner in sorted(lost.items()):
            ours = self.final(wanted[key])
            if ours == winner:
                continue
            if ours not in self.new_profiles:
                # An identity we meant to link to an existing profile was created by a
                # concurrent batch: start over, so load() sees it and join() merges.
                raise _Retry("identity created concurrently")
            winner_uids = set(
                Identity.objects.filter(profile_id=winner, kind=IdentityKind.USER_ID).values_list(
                    "value", flat=True
                )
            )
            if self.owners[ours] and winner_uids and not (self.owners[ours] & winner_uids):
                continue
            Identity.objects.filter(profile_id=ours).update(profile_id=winner)
            Profile.objects.filter(pk=ours).delete()
            self.new_profiles.discard(ours)
            self.remap[ours] = winner


# --- Storage -----------------------------------------------------------------------

_EVENT_COLUMNS = (
    "source_id",
    "message_id",
    "profile_id",
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
    "schema_warnings",
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _pg_cursor() -> Any:
    """A psycopg cursor with server-side parameter binding on Django's connection (and
    so inside its transaction): large array parameters are sent as is, not quoted into
    the SQL text as Django's client-side binding does."""
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _events_insert(rows: Sequence[_Prepared], ctx: IngestContext) -> set[str]:
    """Insert events, skipping (source, message_id) already stored; returns inserted ids."""
    table = Event._meta.db_table
    cols = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    inserted: set[str] = set()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql = (
                f"INSERT INTO {table} ({cols}) SELECT s, m, p, t, e, a, u, ts, ots, sa, ra, "  # noqa: S608
                "pr::jsonb, tr::jsonb, cx::jsonb, b, w::jsonb FROM unnest("
                "%b::bigint[], %b::text[], %b::uuid[], %b::text[], %b::text[], %b::text[], %b::text[], "
                "%b::timestamptz[], %b::timestamptz[], %b::timestamptz[], %b::timestamptz[], "
                "%b::text[], %b::text[], %b::text[], %b::boolean[], %b::text[]) "
                "AS x(s, m, p, t, e, a, u, ts, ots, sa, ra, pr, tr, cx, b, w) "
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id"
            )
            params = [
                [ctx.source_id] * len(rows),
                [r.message_id for r in rows],
                [r.profile_id for r in rows],
                [r.type for r in rows],
                [r.event for r in rows],
                [r.anonymous_id for r in rows],
                [r.user_id for r in rows],
                [r.timestamp for r in rows],
                [r.original_timestamp for r in rows],
                [r.sent_at for r in rows],
                [ctx.received_at] * len(rows),
                [_dumps(r.properties) for r in rows],
                [_dumps(r.traits) for r in rows],
                [_dumps(r.context) for r in rows],
                [r.is_bot for r in rows],
                [_dumps(r.warnings) if r.warnings else None for r in rows],
            ]
            with _pg_cursor() as pg:
                # Binary parameters: no text escaping of 16 arrays × 500 values.
                pg.execute(sql, params, binary=True)
                inserted.update(m for (m,) in pg.fetchall())
        else:
            ops = connection.ops
            placeholders = ", ".join(["%s"] * len(_EVENT_COLUMNS))
            sql = (
                f"INSERT INTO {table} ({cols}) VALUES ({placeholders}) "  # noqa: S608
                "ON CONFLICT (source_id, message_id) DO NOTHING RETURNING message_id"
            )
            received = ops.adapt_datetimefield_value(ctx.received_at)
            for r in rows:
                assert r.profile_id is not None
                cursor.execute(
                    sql,
                    [
                        ctx.source_id,
                        r.message_id,
                        r.profile_id.hex,
                        r.type,
                        r.event,
                        r.anonymous_id,
                        r.user_id,
                        ops.adapt_datetimefield_value(r.timestamp),
                        ops.adapt_datetimefield_value(r.original_timestamp),
                        ops.adapt_datetimefield_value(r.sent_at),
                        received,
                        _dumps(r.properties),
                        _dumps(r.traits),
                        _dumps(r.context),
                        r.is_bot,
                        _dumps(r.warnings) if r.warnings else None,
                    ],
                )
                row = cursor.fetchone()
                if row:
                    inserted.add(row[0])
    return inserted


def _traits_apply(profile: Profile, traits: dict[str, Any], at: datetime) -> bool:
    """Set traits from an identify at `at`: a value set by a newer event is kept."""
    stamp = trait_stamp(at)
    changed = False
    for key, value in traits.items():
        if stamp >= profile.trait_timestamps.get(key, ""):
            if profile.traits.get(key, object()) != value or key not in profile.trait_timestamps:
                changed = True
            profile.traits[key] = value
            profile.trait_timestamps[key] = stamp
    return changed


_PROFILE_UPDATE_FIELDS = [
    "traits",
    "trait_timestamps",
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
    "updated_at",
]


def _profiles_write(profiles: Sequence[Profile]) -> None:
    """Write the touched profiles' traits and computed attributes in one statement."""
    table = Profile._meta.db_table
    cols = [c for c in _PROFILE_UPDATE_FIELDS]
    rows = [
        [
            _dumps(p.traits),
            _dumps(p.trait_timestamps),
            p.first_seen_at,
            p.last_seen_at,
            p.event_count,
            p.session_count,
            p.page_view_count,
            p.purchase_count,
            p.revenue,
            p.avg_order_value,
            p.last_purchase_at,
            p.engagement_score,
            p.engagement_as_of,
            p.updated_at,
        ]
        for p in profiles
    ]
    if connection.vendor == "postgresql":
        types = [
            "jsonb",
            "jsonb",
            "timestamptz",
            "timestamptz",
            "integer",
            "integer",
            "integer",
            "integer",
            "numeric",
            "numeric",
            "timestamptz",
            "double precision",
            "timestamptz",
            "timestamptz",
        ]
        assignments = ", ".join(f'"{c}" = v."{c}"' for c in cols)
        arrays = ", ".join(f"%s::{'text' if t == 'jsonb' else t}[]" for t in types)
        selects = ", ".join(
            f'x."{c}"::jsonb AS "{c}"' if t == "jsonb" else f'x."{c}"'
            for c, t in zip(cols, types, strict=True)
        )
        col_list = ", ".join(f'"{c}"' for c in cols)
        sql = (
            f"UPDATE {table} AS p SET {assignments} FROM ("  # noqa: S608
            f"SELECT x.id, {selects} FROM unnest(%b::uuid[], {arrays}) AS x(id, {col_list})"
            ") AS v WHERE p.id = v.id"
        )
        params: list[Any] = [[p.pk for p in profiles]]
        params += [list(col) for col in zip(*rows, strict=True)]
        with _pg_cursor() as pg:
            pg.execute(sql, params, binary=True)
        return
    ops = connection.ops
    assignments = ", ".join(f'"{c}" = %s' for c in cols)
    sql = f"UPDATE {table} SET {assignments} WHERE id = %s"  # noqa: S608
    adapted = []
    for p, row in zip(profiles, rows, strict=True):
        values = [
            ops.adapt_datetimefield_value(v)
            if isinstance(v, datetime)
            else ops.adapt_decimalfield_value(v, 24, 4)
            if isinstance(v, Decimal)
            else v
            for v in row
        ]
        adapted.append([*values, p.pk.hex])
    with connection.cursor() as cursor:
        cursor.executemany(sql, adapted)


def _profiles_lock(pids: set[uuid.UUID]) -> dict[uuid.UUID, Profile]:
    """Lock the batch's profiles (in pk order, before any event insert takes its FK lock)
    and follow merges that committed meanwhile: returns pid -> live, locked profile.

    FOR NO KEY UPDATE does not conflict with the KEY SHARE that inserting an event takes
    on its profile, so concurrent batches queue on this lock instead of deadlocking."""
    live: dict[uuid.UUID, Profile] = {}
    pending = set(pids)
    aliases: dict[uuid.UUID, uuid.UUID] = {}
    while pending:
        rows = {
            p.pk: p
            for p in Profile.objects.select_for_update(no_key=True)
            .filter(pk__in=pending)
            .order_by("pk")
        }
        missing = pending - rows.keys()
        if missing:
            raise _Retry("profile erased concurrently")
        pending = set()
        for pk, profile in rows.items():
            if profile.merged_into_id is None:
                live[pk] = profile
            else:
                aliases[pk] = profile.merged_into_id
                if profile.merged_into_id not in live:
                    pending.add(profile.merged_into_id)
    out = dict(live)
    for pk, target in aliases.items():
        while target in aliases:
            target = aliases[target]
        out[pk] = live[target]
    return out


def _profiles_update(
    stored: Sequence[_Prepared],
    locked: dict[uuid.UUID, Profile],
    config: StatsConfig,
    now: datetime,
) -> None:
    by_profile: dict[uuid.UUID, list[_Prepared]] = defaultdict(list)
    for r in stored:
        assert r.profile_id is not None
        by_profile[r.profile_id].append(r)
    profiles = [locked[pid] for pid in sorted(by_profile, key=str)]
    changed: list[Profile] = []
    for profile in profiles:
        events = sorted(by_profile[profile.pk], key=lambda r: r.timestamp)
        dirty = False
        for r in events:
            if r.type == "identify" and r.traits:
                dirty |= _traits_apply(profile, r.traits, r.timestamp)
        facts = [
            event_facts(type=r.type, event=r.event, properties=r.properties, timestamp=r.timestamp)
            for r in events
            if not r.is_bot
        ]
        if facts:
            new, exact = stats_apply(stats_of(profile), facts, config)
            stats_set(profile, new)
            if not exact:
                # Events older than last_seen: only a recount over the timeline is exact.
                profile.session_count = profile_sessions_recount(profile_id=profile.pk)
            dirty = True
        if dirty:
            profile.updated_at = now
            changed.append(profile)
    if changed:
        _profiles_write(changed)


def _tombstoned(keys_: set[Key]) -> set[Key]:
    """Which of these (unknown) identities belonged to an erased person."""
    if not keys_:
        return set()
    pii_key = settings.CDP["PII_HASH_KEY"]
    by_hash = {keys.tombstone_hash(pii_key, k, v): (k, v) for k, v in keys_}
    found = ErasedIdentity.objects.filter(value_hash__in=by_hash).values_list(
        "value_hash", flat=True
    )
    return {by_hash[h] for h in found}


def _gate(
    prepared: list[_Prepared], resolver: _Resolver, keys_: set[Key], dropped: dict[str, int]
) -> list[_Prepared]:
    """Drop events of erased identities, and events without the tracking purpose's consent
    (events that carry consent are always kept: they are the proof)."""
    unknown = {k for k in keys_ if k not in resolver.ids}
    erased = _tombstoned(unknown)
    hooks = ingest_hooks.consent_hooks
    existing = {pid for pid in resolver.ids.values()}
    allowed, default = hooks.tracking(existing) if hooks else ({}, True)
    decided: dict[Key, bool] = {}  # consent carried by earlier events of this batch
    kept: list[_Prepared] = []
    for p in prepared:
        ids = p.identity_keys()
        if any(k in erased for k in ids):
            dropped["erased"] = dropped.get("erased", 0) + 1
            continue
        if hooks and p.consent:
            carried = hooks.tracking_in(p.consent.get("purposes", {}))
            if carried is not None:
                decided.update((k, carried) for k in ids)
            kept.append(p)  # it carries a consent choice: stored as its proof
            continue
        state = next((decided[k] for k in ids if k in decided), None)
        if state is None:
            pid = next((resolver.ids[k] for k in ids if k in resolver.ids), None)
            state = allowed.get(pid, default) if pid is not None else default
        if state:
            kept.append(p)
        else:
            dropped["consent"] = dropped.get("consent", 0) + 1
    return kept


def _store(
    prepared: list[_Prepared], ctx: IngestContext, dropped: dict[str, int]
) -> list[_Prepared]:
    with transaction.atomic():
        resolver = _Resolver(ctx.source_id)
        keys_: set[Key] = set()
        for p in prepared:
            keys_.update(p.identity_keys())
            if p.previous_id:
                keys_.add((IdentityKind.USER_ID.value, p.previous_id))
                keys_.add((IdentityKind.ANONYMOUS_ID.value, p.previous_id))
        resolver.load(keys_)
        prepared = _gate(prepared, resolver, keys_, dropped)
        if not prepared:
            return []
        for p in prepared:
            p.profile_id = resolver.resolve(p)
        resolver.persist()
        locked = _profiles_lock({resolver.final(p.profile_id) for p in prepared if p.profile_id})
        for p in prepared:
            assert p.profile_id is not None
            p.profile_id = locked[resolver.final(p.profile_id)].pk
        inserted_ids = _events_insert(prepared, ctx)
        stored = [p for p in prepared if p.message_id in inserted_ids]
        _profiles_update(stored, locked, stats_config(), ctx.received_at)
        carried = [
            CarriedConsent(
                profile_id=p.profile_id,
                purposes=p.consent.get("purposes", {}),
                policy_version=str(p.consent.get("policy_version", "")),
                at=p.timestamp,
                source_id=ctx.source_id,
            )
            for p in stored
            if p.consent and p.profile_id is not None
        ]
        if carried and ingest_hooks.consent_hooks is not None:
            ingest_hooks.consent_hooks.record_carried(carried)
        if stored:
            profile_ids = sorted({p.profile_id for p in stored if p.profile_id}, key=str)
            names = sorted({p.event for p in stored})
            # robust: the events are committed; a receiver that fails (Redis or the
            # database away) must not turn the 202 into an error that invites a resend.
            transaction.on_commit(
                lambda: events_ingested.send(
                    sender=Event, profile_ids=profile_ids, event_names=names
                ),
                robust=True,
            )
    return stored


def _is_retryable(exc: Exception) -> bool:
    # A concurrent change, a PostgreSQL deadlock / serialization failure (raised wrapped by
    # Django or raw by the psycopg cursor), or SQLite's "database is locked".
    if isinstance(exc, _Retry):
        return True
    code = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
    return code in {"40P01", "40001", "55P03"} or "locked" in str(exc)


def events_ingest(
    *, ctx: IngestContext, payloads: Sequence[Any], screen: bool = True
) -> IngestResult:
    """Validate and store a batch. Valid events are stored even when others are rejected;
    a message_id already stored for this source is counted as a duplicate, not stored again.
    """
    rejected: list[dict[str, Any]] = []
    prepared: list[_Prepared] = []
    seen: set[str] = set()
    duplicates = 0
    schemas = _schemas()
    for index, payload in enumerate(payloads):
        # The API skips screening when the body is small and has no NUL escape at all.
        errors = _screen_errors(payload) if screen else None
        ev: EventIn | None = None
        if errors is None:
            ev, errors = event_validate(payload)
        if errors is None and ev is not None:
            result = _prepare(index, ev, ctx, schemas)
            if isinstance(result, dict):
                errors = result
            else:
                if result.message_id in seen:
                    duplicates += 1
                    continue
                seen.add(result.message_id)
                prepared.append(result)
                continue
        rejected.append({"index": index, "errors": errors})

    stored: list[_Prepared] = []
    dropped: dict[str, int] = {}
    if prepared:
        # SQLite reports lock contention at once (shared cache) and has one writer, so it
        # gets more, shorter retries than PostgreSQL's rare deadlocks.
        attempts = 4 if connection.vendor == "postgresql" else 50
        for attempt in range(attempts):
            try:
                dropped = {}
                stored = _store(prepared, ctx, dropped)
                break
            except (OperationalError, psycopg.OperationalError, _Retry) as exc:
                if attempt == attempts - 1 or not _is_retryable(exc):
                    raise
                # Type and SQLSTATE only: database messages can quote row values.
                code = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
                logger.info("ingest retry %d after %s (%s)", attempt + 1, type(exc).__name__, code)
                time.sleep(min(0.2, 0.01 * (attempt + 1)))
                for p in prepared:
                    p.profile_id = None
    outcome = IngestResult(
        accepted=len(stored),
        duplicates=duplicates + len(prepared) - len(stored) - sum(dropped.values()),
        rejected=rejected,
        profile_ids=sorted({p.profile_id for p in stored if p.profile_id}, key=str),
        dropped=dropped,
    )
    # Once per batch: a few increments, whatever the batch size.
    if outcome.accepted:
        events_accepted.inc(outcome.accepted)
    if outcome.duplicates:
        events_duplicates.inc(outcome.duplicates)
    if rejected:
        events_rejected.inc(len(rejected))
    for reason, count in dropped.items():
        events_dropped.labels(reason=reason).inc(count)
    return outcome


# --- One visitor, outside an event (consent calls) ----------------------------------


class IdentityErased(Exception):
    """The identity belonged to a person who was erased."""


def visitor_profile(
    *,
    ctx: IngestContext,
    anonymous_id: str | None,
    user_id: str | None,
    user_hash: str | None,
    create: bool,
) -> Profile | None:
    """The profile of the visitor a call names, with the same identity rules (and
    verification) as events; creates it when `create`. Raises ValidationFailed for an
    unverifiable user_id and IdentityErased for an erased identity."""
    from cdp.errors import ValidationFailed

    resolve_uid = user_id
    if user_id is not None and not ctx.trusted and ctx.require_identity_verification:
        if user_hash is None:
            if anonymous_id is None:
                raise ValidationFailed(
                    "user_hash: required: this source verifies user_id with user_hash",
                    details={"user_hash": ["required"]},
                )
            resolve_uid = None
        elif not keys.user_hash_valid(ctx.identity_secret, user_id, user_hash):
            raise ValidationFailed(
                "user_hash: does not match user_id",
                details={"user_hash": ["does not match user_id"]},
            )
    p = _Prepared(
        index=0,
        message_id="",
        type="identify",
        event="",
        anonymous_id=anonymous_id,
        user_id=user_id,
        resolve_user_id=resolve_uid,
        previous_id=None,
        timestamp=ctx.received_at,
        original_timestamp=None,
        sent_at=None,
        properties={},
        traits={},
        context={},
        is_bot=False,
        warnings=None,
        email_hash=None,
    )
    keys_ = set(p.identity_keys())
    if not keys_:
        return None
    with transaction.atomic():
        resolver = _Resolver(ctx.source_id)
        resolver.load(keys_)
        if _tombstoned({k for k in keys_ if k not in resolver.ids}):
            raise IdentityErased()
        if not create:
            found = [resolver.lookup(k) for k in p.identity_keys()]
            pid = next((f for f in found if f is not None), None)  # user_id first
            return Profile.objects.filter(pk=pid).first() if pid else None
        pid = resolver.resolve(p)
        resolver.persist()
        return _profiles_lock({resolver.final(pid)})[resolver.final(pid)]
