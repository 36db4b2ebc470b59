"""`/decide`'s hot path. A warm call for a known visitor reads only in-process caches
and one Redis MGET (the rules version, the snapshot epoch, the visitor's snapshot and
frequency counters together), plus one write when a capped rule is served; no database
query. DESIGN.md §7 shows why: one PostgreSQL read per request caps throughput below
the bar.

Caches and how each one is kept true:
- compiled rules, in process: reloaded when the version key in Redis changes (every
  save bumps it: rules.services.config_changed);
- identity → profile, in process for IDENTITY_TTL seconds (merges move identities; a
  stale entry costs one snapshot rebuild that follows the merge);
- the profile snapshot, in Redis under the profile's cache key: deleted when the
  profile changes (events, consent, memberships, merges, erasure), and all of them
  retired at once by the epoch key after a batch recompute. A change also bumps the
  profile's generation counter, read in the same MGET: a snapshot is used only while its
  generation is current, so one built from rows read just before a change, and written
  just after its invalidation, is never served (a browser's next page asks `/decide`
  while the last page's events are still arriving by beacon).
If Redis is unreachable, `/decide` answers from the database (and stops asking Redis
for a few seconds), never with a 5xx.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from cdp.metrics import decide_snapshot_hits, decide_snapshot_misses
from profiles.models import Identity, Profile
from profiles.privacy import identity_cache_key, profile_cache_key
from rules import decisionlog, hooks
from rules.engine import CompiledSlot, SlotDecision, cap_key, cap_ttl, decide_slot
from rules.selectors import (
    RulesConfig,
    Snapshot,
    rules_config_load,
    snapshot_build,
    snapshots_build,
    unknown_visitor_facts,
)

logger = logging.getLogger(__name__)

VERSION_KEY = "cdp:rules:version"
EPOCH_KEY = "cdp:snapshot:epoch"
SNAPSHOT_TTL = 3600
# Outlives every snapshot written under it (each bump renews it), so an expired
# counter never makes an old snapshot current again.
GENERATION_TTL = 2 * SNAPSHOT_TTL
IDENTITY_TTL = 30.0
IDENTITY_SHARED_TTL = 24 * 3600
IDENTITY_MAX = 100_000
CONFIG_TTL_WITHOUT_CACHE = 5.0
CACHE_RETRY_AFTER = 5.0

_lock = threading.Lock()
_config: RulesConfig | None = None
_config_loaded_at = 0.0
_identities: OrderedDict[tuple[str, str], tuple[float, uuid.UUID]] = OrderedDict()
_cache_down_until = 0.0
# Set while the cache is away: the invalidations skipped meanwhile are lost, so snapshots
# cached before the outage may be stale once it is back (if it kept its data).
_retire_on_recovery = False


def reset() -> None:
    """Forget every in-process cache (tests; a process that wants a cold start)."""
    global _config, _config_loaded_at, _cache_down_until, _store, _retire_on_recovery
    with _lock:
        _config, _config_loaded_at, _cache_down_until, _store = None, 0.0, 0.0, None
        _retire_on_recovery = False
        _identities.clear()


# --- The cache, with a breaker ----------------------------------------------------------


class _DjangoStore:
    """Through Django's cache API (local memory in the embedded default)."""

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return cache.get_many(keys)

    def set(self, key: str, value: Any, ttl: int | None) -> None:
        cache.set(key, value, ttl)

    def delete_many(self, keys: list[str]) -> None:
        cache.delete_many(keys)

    def incr(self, counters: list[tuple[str, int]]) -> None:
        for key, ttl in counters:
            if not cache.add(key, 1, ttl):
                cache.incr(key)
                cache.touch(key, ttl)


class _RedisStore:
    """Straight to Redis with one long-lived client: Django's Redis backend builds a new
    client object per call, a measurable share of a warm `/decide`. Keys and values are
    in Django's format (`cache.make_key`, pickle, plain ints), so the cache API reads,
    writes and deletes the same entries (invalidation and erasure use it)."""

    def __init__(self, location: str, options: Mapping[str, Any]) -> None:
        import redis

        self.client = redis.Redis.from_url(
            location,
            socket_connect_timeout=options.get("socket_connect_timeout", 0.5),
            socket_timeout=options.get("socket_timeout", 0.5),
        )

    @staticmethod
    def _load(raw: Any) -> Any:
        try:
            return int(raw)
        except ValueError:
            return pickle.loads(raw)  # noqa: S301 - our own cache entries

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        values = self.client.mget([cache.make_key(k) for k in keys])
        return {k: self._load(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set(self, key: str, value: Any, ttl: int | None) -> None:
        raw = value if type(value) is int else pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        self.client.set(cache.make_key(key), raw, ex=ttl)

    def delete_many(self, keys: list[str]) -> None:
        if keys:
            self.client.delete(*[cache.make_key(k) for k in keys])

    def incr(self, counters: list[tuple[str, int]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:  # one round trip for all
            for key, ttl in counters:
                full = cache.make_key(key)
                pipe.incr(full)
                pipe.expire(full, ttl)
            pipe.execute()


_store: _DjangoStore | _RedisStore | None = None


def store() -> _DjangoStore | _RedisStore:
    global _store
    if _store is None:
        conf = settings.CACHES["default"]
        if conf["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
            _store = _RedisStore(conf["LOCATION"], conf.get("OPTIONS", {}))
        else:
            _store = _DjangoStore()
    return _store


def _cache_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call the cache; None (and a pause of CACHE_RETRY_AFTER) when it is unreachable.
    The first call that reaches it again retires every cached snapshot: the changes made
    meanwhile could not drop theirs."""
    global _cache_down_until, _retire_on_recovery
    if time.monotonic() < _cache_down_until:
        _retire_on_recovery = True
        return None
    try:
        if _retire_on_recovery:
            store().set(EPOCH_KEY, uuid.uuid4().hex, None)
            _retire_on_recovery = False
            logger.info("cache reachable again: cached snapshots retired")
        return fn(*args, **kwargs)
    except Exception:  # redis-py raises ConnectionError, TimeoutError, ...
        logger.warning("cache unreachable: /decide answers from the database", exc_info=True)
        _cache_down_until = time.monotonic() + CACHE_RETRY_AFTER
        _retire_on_recovery = True
        return None


# --- Visitors -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Visitor:
    profile_id: uuid.UUID | None
    key: str  # sticky hashing and frequency caps (visitor_unit)


def _remember(pairs: Mapping[tuple[str, str], uuid.UUID], now: float) -> None:
    with _lock:
        for pair, pid in pairs.items():
            _identities[pair] = (now, pid)
            _identities.move_to_end(pair)
        while len(_identities) > IDENTITY_MAX:
            _identities.popitem(last=False)


def visitor_resolve(*, keys: list[tuple[str, str]]) -> Visitor:
    """The live profile the identifiers name (user_id first), without creating one:
    from this process's memory, else Redis (one MGET), else the database (one query,
    whose answer goes to Redis for the other processes)."""
    now = time.monotonic()
    found: dict[tuple[str, str], uuid.UUID] = {}
    for k in keys:
        hit = _identities.get(k)
        if hit is not None and now - hit[0] < IDENTITY_TTL:
            found[k] = hit[1]
    if not any(k in found for k in keys[:1]):  # the strongest identifier is not known here
        missing = [k for k in keys if k not in found]
        shared = _cache_call(store().get_many, [identity_cache_key(*k) for k in missing])
        from_redis = {
            k: uuid.UUID(str(shared[identity_cache_key(*k)]))
            for k in missing
            if shared and identity_cache_key(*k) in shared
        }
        found.update(from_redis)
        _remember(from_redis, now)
        missing = [k for k in missing if k not in found]
        if missing and not any(k in found for k in keys[:1]):
            q = Q()
            for kind, value in missing:
                q |= Q(kind=kind, value=value)
            rows = {
                (kind, value): pid
                for kind, value, pid in Identity.objects.filter(q).values_list(
                    "kind", "value", "profile_id"
                )
            }
            found.update(rows)
            _remember(rows, now)
            for (kind, value), pid in rows.items():
                _cache_call(
                    store().set, identity_cache_key(kind, value), str(pid), IDENTITY_SHARED_TTL
                )
    unit = visitor_unit(*keys[0])
    for k in keys:
        if k in found:
            return Visitor(found[k], unit)
    return Visitor(None, unit)


def visitor_unit(kind: str, value: str) -> str:
    """The unit that control groups, experiments and frequency caps count: the strongest
    identifier of the request ("u:<user_id>", else "a:<anonymous_id>"), not the profile
    id, so a first visit before any event lands in the same group as the visits after."""
    return f"{kind[0]}:{value}"


def identities_forget(*, pairs: Iterable[tuple[str, str]]) -> None:
    """These identifiers may point elsewhere now (a merge): drop them here and in Redis."""
    pairs = list(pairs)
    with _lock:
        for pair in pairs:
            _identities.pop(pair, None)
    _cache_call(store().delete_many, [identity_cache_key(*p) for p in pairs])


# --- Configuration and snapshots ---------------------------------------------------------


def _config_for(version: str | None) -> RulesConfig:
    """The compiled configuration; reloaded when the shared version moved (or, without a
    reachable cache, every CONFIG_TTL_WITHOUT_CACHE seconds)."""
    global _config, _config_loaded_at
    config = _config
    stale = (
        config is None
        or (version is not None and config.version != version)
        or (version is None and time.monotonic() - _config_loaded_at > CONFIG_TTL_WITHOUT_CACHE)
    )
    if stale:
        config = rules_config_load(version=version or (config.version if config else "0"))
        with _lock:
            _config, _config_loaded_at = config, time.monotonic()
    assert config is not None
    return config


def config_current() -> RulesConfig:
    """The configuration this process would decide with now (admin preview, tests)."""
    got = _cache_call(store().get_many, [VERSION_KEY])
    version = (got or {}).get(VERSION_KEY)
    return _config_for(str(version) if version is not None else ("0" if got is not None else None))


def generation_key(profile_id: object) -> str:
    return f"{profile_cache_key(profile_id)}:gen"


def snapshots_forget(*, profile_ids: Iterable[Any]) -> None:
    """These profiles changed: bump their generations, then drop their snapshots (in
    that order, so a snapshot written in between carries the old generation)."""
    ids = list(profile_ids)
    if not ids:
        return
    _cache_call(store().incr, [(generation_key(pid), GENERATION_TTL) for pid in ids])
    _cache_call(store().delete_many, [profile_cache_key(pid) for pid in ids])


def _snapshot_keys(profile_id: uuid.UUID) -> list[str]:
    return [profile_cache_key(profile_id), generation_key(profile_id)]


def _snapshot(
    profile_id: uuid.UUID, config: RulesConfig, epoch: str, got: Mapping[str, Any], now: datetime
) -> Snapshot | None:
    cached = got.get(profile_cache_key(profile_id))
    generation = int(got.get(generation_key(profile_id)) or 0)
    if (
        isinstance(cached, Snapshot)
        and cached.config_version == config.version
        and getattr(cached, "epoch", None) == epoch
        and getattr(cached, "generation", None) == generation
    ):
        decide_snapshot_hits.inc()
        return cached
    decide_snapshot_misses.inc()
    snap = snapshot_build(profile_id=profile_id, config=config, now=now)
    if snap is None:
        # The profile was merged away since its identity was cached: follow the merge.
        survivor = (
            Profile.objects.filter(pk=profile_id).values_list("merged_into_id", flat=True).first()
        )
        if survivor is None:
            return None
        snap = snapshot_build(profile_id=survivor, config=config, now=now)
        if snap is None:
            return None
        if survivor != profile_id:  # its generation was not in the MGET
            generation = int(
                (_cache_call(store().get_many, [generation_key(survivor)]) or {}).get(
                    generation_key(survivor)
                )
                or 0
            )
    snap.epoch = epoch
    snap.generation = generation
    _cache_call(store().set, profile_cache_key(snap.profile_id), snap, SNAPSHOT_TTL)
    return snap


def snapshots_warm(*, profile_ids: list[uuid.UUID], now: datetime | None = None) -> int:
    """Build and cache the snapshots of these profiles in bulk (a few queries per
    thousand profiles): after a deploy or a batch recompute, so the first visits of the
    active visitors are warm. Returns how many were cached."""
    now = now or timezone.now()
    config = config_current()
    got = _cache_call(store().get_many, [EPOCH_KEY]) or {}
    epoch = str(got.get(EPOCH_KEY) or "0")
    done = 0
    for start in range(0, len(profile_ids), 1000):
        chunk = profile_ids[start : start + 1000]
        generations = _cache_call(store().get_many, [generation_key(p) for p in chunk]) or {}
        for snap in snapshots_build(profile_ids=chunk, config=config, now=now).values():
            snap.epoch = epoch
            snap.generation = int(generations.get(generation_key(snap.profile_id)) or 0)
            _cache_call(store().set, profile_cache_key(snap.profile_id), snap, SNAPSHOT_TTL)
            done += 1
        # … and where their identifiers lead, for every process
        for kind, value, pid in Identity.objects.filter(
            profile_id__in=chunk, kind__in=["user_id", "anonymous_id"]
        ).values_list("kind", "value", "profile_id"):
            _cache_call(store().set, identity_cache_key(kind, value), str(pid), IDENTITY_SHARED_TTL)
    return done


# --- Deciding ------------------------------------------------------------------------------


def visitor_snapshot(
    *, identity_keys: list[tuple[str, str]], now: datetime | None = None
) -> tuple[Visitor, Snapshot | None, RulesConfig]:
    """The visitor, their snapshot and the configuration, as `/decide` reads them (one
    MGET when warm; the database when Redis is down): for other endpoints that answer
    from the same cached profile data (recommendations)."""
    now = now or timezone.now()
    visitor = visitor_resolve(keys=identity_keys)
    wanted = [VERSION_KEY, EPOCH_KEY]
    if visitor.profile_id is not None:
        wanted += _snapshot_keys(visitor.profile_id)
    got = _cache_call(store().get_many, wanted)
    if got is None:
        config, got = _config_for(None), {}
    else:
        config = _config_for(str(got.get(VERSION_KEY) or "0"))
    snapshot = None
    if visitor.profile_id is not None:
        snapshot = _snapshot(
            visitor.profile_id,
            config,
            str(got.get(EPOCH_KEY) or "0"),
            got,
            now,
        )
    return visitor, snapshot, config


def decide(
    *,
    identity_keys: list[tuple[str, str]],
    slots: list[str],
    context: Mapping[str, Any],
    source_id: int | None,
    now: datetime | None = None,
    log: bool = True,
    flags: Sequence[str] = (),
) -> tuple[uuid.UUID | None, dict[str, SlotDecision], dict[str, str]]:
    """Decide every slot (and every flag: an experiment without a slot) for the visitor.
    Returns (profile id, decisions, decision ids); a flag's entries are keyed
    `flag_slot_key(key)`. Raises UnknownSlots before doing anything when a slot does not
    exist (an unknown or stopped flag answers no variant instead)."""
    now = now or timezone.now()
    visitor = visitor_resolve(keys=identity_keys)
    config = _config
    capped = _capped_keys(config, slots, visitor.key, now) if config else []
    wanted = [VERSION_KEY, EPOCH_KEY, *capped]
    if visitor.profile_id is not None:
        wanted += _snapshot_keys(visitor.profile_id)
    got = _cache_call(store().get_many, wanted)
    if got is None:  # no cache: the database is the truth (slower, still correct)
        config = _config_for(None)
        got, caps_known = {}, False
    else:
        config = _config_for(str(got.get(VERSION_KEY) or "0"))
        caps_known = True
        again = [k for k in _capped_keys(config, slots, visitor.key, now) if k not in wanted]
        if again:  # the configuration moved: fetch the counters of the new capped rules
            got.update(_cache_call(store().get_many, again) or {})
    unknown = [s for s in slots if s not in config.slots]
    if unknown:
        raise UnknownSlots(unknown, sorted(config.slots))
    snapshot = None
    if visitor.profile_id is not None:
        snapshot = _snapshot(
            visitor.profile_id,
            config,
            str(got.get(EPOCH_KEY) or "0"),
            got,
            now,
        )
    if snapshot is not None:
        facts = dataclasses.replace(snapshot.facts, context=context)
        personalization, profile_id = snapshot.personalization, snapshot.profile_id
    else:
        facts = dataclasses.replace(unknown_visitor_facts(config), context=context)
        personalization, profile_id = config.personalization_default, None
    caps: dict[str, int] = {}
    for key in _capped_keys(config, slots, visitor.key, now):
        # Without the counters, a capped rule is treated as capped: never over-serve.
        caps[key] = int(got.get(key) or 0) if caps_known else 1 << 30
    extra = snapshot.extra if snapshot else {}
    providers = hooks.providers(config.extensions, extra)
    strategies = hooks.strategies(config.extensions, extra)
    targets = {key: config.slots[key] for key in slots}
    for flag in flags:
        targets[flag_slot_key(flag)] = flag_slot(flag)
    decisions = {
        key: decide_slot(
            target,
            facts,
            now,
            visitor=visitor.key,
            personalization=personalization,
            caps=caps,
            providers=providers,
            strategies=strategies,
        )
        for key, target in targets.items()
    }
    if personalization:
        # A flag answered by no experiment stays without one (the tag is still logged).
        hooks.tag_decisions(
            config.extensions, extra, decisions.values(), visitor.key, show_in=set(slots)
        )
    _count_impressions(decisions.values(), visitor.key, now)
    ids = {key: str(uuid.uuid4()) for key in decisions}
    if log:
        decisionlog.enqueue(
            [
                {
                    "id": ids[key],
                    "decided_at": now,
                    "source_id": source_id,
                    "profile_id": profile_id,
                    "slot": key,
                    "variant": d.variant or "",
                    "kind": d.source,
                    "rule_id": d.rule.id if d.rule else None,
                    "rule_key": d.rule.key if d.rule else "",
                    "experiment": (d.experiment or {}).get("key", ""),
                    "experiment_variant": (d.experiment or {}).get("variant", ""),
                    "holdout": (d.tag or {}).get("key", ""),
                    "holdout_variant": (d.tag or {}).get("variant", ""),
                    "control": d.control,
                    "reason": d.reason,
                }
                for key, d in decisions.items()
            ]
        )
    return profile_id, decisions, ids


FLAG_PREFIX = "flag:"


def flag_slot_key(flag: str) -> str:
    """The pseudo-slot a flag is decided (and logged) under."""
    return f"{FLAG_PREFIX}{flag}"[:100]


def flag_slot(flag: str) -> CompiledSlot:
    """A flag is a slot with no rules and no default: only an experiment answers it."""
    return CompiledSlot(flag_slot_key(flag), "first_match", 0.0, None, {}, ())


class UnknownSlots(Exception):
    def __init__(self, unknown: list[str], known: list[str]) -> None:
        super().__init__(", ".join(unknown))
        self.unknown = unknown
        self.known = known


def _capped_keys(config: RulesConfig, slots: list[str], visitor: str, now: datetime) -> list[str]:
    return [
        cap_key(visitor, rule, now)
        for s in slots
        if s in config.slots
        for rule in config.slots[s].rules
        if rule.cap_count is not None
    ]


def _count_impressions(decisions: Iterable[SlotDecision], visitor: str, now: datetime) -> None:
    """One more impression on each capped rule served (one round trip for all; INCR and
    EXPIRE together, so a session cap's expiry slides)."""
    timeout = settings.CDP["SESSION_TIMEOUT_SECONDS"]
    counters = [
        (cap_key(visitor, d.rule, now), cap_ttl(d.rule, timeout))
        for d in decisions
        if d.rule is not None and d.rule.cap_count is not None
    ]
    if counters:
        _cache_call(store().incr, counters)
