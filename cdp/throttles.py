"""Rate limits for the API (docs/api.md "Rate limits"): per source key and per client IP.

Fixed-window counters in the shared cache (Redis in production, so every web process and
host counts together). A process counts locally and adds its counts to Redis at most
every FLUSH_SECONDS (one pipelined round trip for all its counters), reading the totals
back: a request pays no round trip of its own, and a client spread over P processes can
pass a limit by at most what it sends each of them in FLUSH_SECONDS. (A round trip per
request was measured at ~17 % of a `/decide` under load, as much as the decision's own
Redis read.) DRF's SimpleRateThrottle keeps a list of timestamps per key instead, read and
rewritten on every call. A fixed window lets a client send up to twice its limit across a
window boundary; the limits are abuse guards, not quotas.

If the cache cannot be reached the request is let through (and a warning logged): a
Redis restart must not turn into an outage of event collection.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.core.checks import CheckMessage, Error, Tags, register
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from cdp.auth import credential

if TYPE_CHECKING:
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

WRITE_KEY, SECRET_KEY, CLIENT_IP = "write_key", "secret_key", "client_ip"
_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(
    r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$", re.IGNORECASE
)
_OFF = {"", "off", "none", "unlimited"}


@lru_cache(maxsize=64)
def rate_parse(rate: str | None) -> tuple[int, int] | None:
    """A rate as (requests, window seconds): "5000/s", "300/min", "100/10s", "20/hour",
    "1000/day"; None or "off" is no limit. Raises ValueError for anything else, so a typo in
    CDP_RATE_LIMITS fails at the first request instead of silently disabling a limit."""
    if rate is None or rate.strip().lower() in _OFF:
        return None
    match = _RATE.match(rate)
    if match is None:
        raise ValueError(f"rate {rate!r}: expected '<requests>/<period>', e.g. '100/s' or '20/min'")
    count, multiple, unit = match.groups()
    return int(count), int(multiple or 1) * _PERIODS[unit[0].lower()]


@register(Tags.security)
def rate_limits_check(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """`manage.py check` (and migrate, runserver) names a mistyped rate before any
    request meets it."""
    problems: list[CheckMessage] = []
    rates = settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES", {})
    for scope in (WRITE_KEY, SECRET_KEY, CLIENT_IP):
        try:
            rate_parse(rates.get(scope))
        except ValueError as exc:
            problems.append(Error(f"CDP_RATE_LIMITS {scope}: {exc}", id="cdp.E001"))
    return problems


def client_ip(request: HttpRequest) -> str:
    """The caller's address: REMOTE_ADDR, unless NUM_PROXIES says how many proxies in front
    of the app append to X-Forwarded-For; then the address the outermost trusted proxy saw.
    (DRF's own get_ident believes the whole header when NUM_PROXIES is unset, which lets any
    client pick its own address, and with it a fresh limit per request.)"""
    remote = str(request.META.get("REMOTE_ADDR") or "")
    proxies = api_settings.NUM_PROXIES
    if not proxies:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if not forwarded:
        return remote
    hops = [hop.strip() for hop in str(forwarded).split(",")]
    return hops[-min(int(proxies), len(hops))] or remote


def _redis_client(backend: RedisCache) -> Any:
    # Django makes a new client object per call (the pool is shared); keep one per backend
    # (caches are per thread), which halves the cost of a check.
    client = getattr(backend, "_cdp_rate_client", None)
    if client is None:
        client = cast(Any, backend)._cache.get_client(write=True)
        backend._cdp_rate_client = client  # type: ignore[attr-defined]
    return client


CACHE_RETRY_SECONDS = 5.0
FLUSH_SECONDS = 0.05
_cache_down_until = 0.0
_lock = threading.Lock()
# key -> [count not yet in Redis, window, monotonic second it expires]
_pending: dict[str, list[int]] = {}
_known: dict[str, tuple[int, float]] = {}  # key -> (total in Redis, monotonic expiry)
_last_flush = 0.0


def local_counts_reset() -> None:
    """Forget this process's counts (tests: a fresh process)."""
    global _last_flush
    with _lock:
        _pending.clear()
        _known.clear()
        _last_flush = 0.0


def counters_incr(counters: list[tuple[str, int]]) -> list[int] | None:
    """Add one to each (key, window) counter, each expiring with its window; their counts
    as this process knows them (the total in Redis at the last flush plus what it counted
    since), or None when there is no shared cache to count in."""
    global _last_flush
    backend = caches["default"]
    if not isinstance(backend, RedisCache):
        try:
            return [_local_incr(backend, key, window) for key, window in counters]
        except Exception:
            logger.warning("rate limit counters unavailable", exc_info=True)
            return None
    now = time.monotonic()
    with _lock:
        counts = []
        for key, window in counters:
            pending = _pending.setdefault(key, [0, window, int(now) + window + 1])
            pending[0] += 1
            counts.append(_known.get(key, (0, 0.0))[0] + pending[0])
        batch: dict[str, list[int]] = {}
        redis_up = not _cache_down_until or now >= _cache_down_until
        if redis_up and now - _last_flush >= FLUSH_SECONDS:
            batch = dict(_pending)
            _pending.clear()
            _last_flush = now
    if batch:
        _flush(backend, batch, now)
    return counts


def _flush_now() -> None:
    """Send what this process counted to Redis at once (tests)."""
    global _last_flush
    backend = caches["default"]
    with _lock:
        batch = dict(_pending)
        _pending.clear()
        _last_flush = time.monotonic()
    if batch and isinstance(backend, RedisCache):
        _flush(backend, batch, _last_flush)


def _flush(backend: RedisCache, batch: dict[str, list[int]], now: float) -> None:
    """INCRBY each counter by what this process counted, and learn the totals."""
    global _cache_down_until
    try:
        # Re-setting the TTL each time is harmless: the key names its window, so a later
        # window never reads it.
        pipe = _redis_client(backend).pipeline(transaction=False)
        keys = list(batch)
        for key in keys:
            count, window, _ = batch[key]
            full_key = backend.make_key(key)
            pipe.incrby(full_key, count)
            pipe.expire(full_key, window + 1)
        totals = [int(n) for n in pipe.execute()[::2]]
    except Exception:
        # Not again for a few seconds (each try could wait for the connect timeout);
        # meanwhile this process keeps counting on its own, these counts included.
        _cache_down_until = now + CACHE_RETRY_SECONDS
        with _lock:
            for key, (count, window, expires) in batch.items():
                if expires >= now:  # a window that has passed needs no count
                    _pending.setdefault(key, [0, window, expires])[0] += count
        logger.warning(
            "rate limit counters unavailable; counted in this process only for %s s",
            CACHE_RETRY_SECONDS,
            exc_info=True,
        )
        return
    with _lock:
        for key, total in zip(keys, totals, strict=True):
            # What this process counted meanwhile stays pending; the total includes the rest.
            _known[key] = (total, now + batch[key][1] + 1)
        for key in [k for k, (_, expires) in _known.items() if expires < now]:
            del _known[key]


def _local_incr(backend: Any, key: str, window: int) -> int:
    try:
        return int(backend.incr(key))
    except ValueError:  # first hit of the window
        if backend.add(key, 1, timeout=window + 1):
            return 1
        return int(backend.incr(key))


class ApiRateThrottle(BaseThrottle):
    """The API's limits: per source key (write and secret apart) and per client IP.

    The write key is shared by every browser of a shop, so its limit is high; the secret
    key's is for one server's imports and reads. The per-IP limit is for browsers and
    unauthenticated callers, so one abusive browser (or a script with a shop's public
    write key) cannot use the shop's whole budget; secret-key servers and staff sessions
    are not limited by address. Both counters cost one cache round trip together.
    """

    def limits_for(self, request: Request) -> list[tuple[str, str]]:
        cred = credential(request)
        if cred is not None:
            if cred.is_secret:
                return [(SECRET_KEY, str(cred.source_id))]
            return [(WRITE_KEY, str(cred.source_id)), (CLIENT_IP, client_ip(request._request))]
        user = request.user  # already authenticated by now: no extra lookup
        if user is not None and user.is_authenticated and user.is_staff:
            return []
        return [(CLIENT_IP, client_ip(request._request))]

    def allow_request(self, request: Request, view: APIView) -> bool:
        rates = api_settings.DEFAULT_THROTTLE_RATES
        now = time.time()
        counters: list[tuple[str, int, int, int]] = []  # key, window, limit, bucket
        for scope, ident in self.limits_for(request):
            rate = rate_parse(rates.get(scope))
            if rate is not None:
                limit, window = rate
                bucket = int(now // window)
                counters.append((f"rl:{scope}:{ident}:{window}:{bucket}", window, limit, bucket))
        if not counters:
            return True
        counts = counters_incr([(key, window) for key, window, _, _ in counters])
        if counts is None:
            return True
        waits = [
            (bucket + 1) * window - now
            for (_, window, limit, bucket), count in zip(counters, counts, strict=True)
            if count > limit
        ]
        if not waits:
            return True
        self._wait = max(waits)
        return False

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)


# --- Refused keys count too ------------------------------------------------------------
# DRF authenticates before it throttles, so a request with a missing or made-up key is
# refused (401) before any limit sees it: a flood of random keys would cost a key lookup
# each, unlimited. These two close that: a refusal counts against the caller's address,
# and an address already over its limit is refused before its key is looked up.


def _address_counter(request: HttpRequest) -> tuple[str, int, int, float] | None:
    rate = rate_parse(api_settings.DEFAULT_THROTTLE_RATES.get(CLIENT_IP))
    if rate is None:
        return None
    limit, window = rate
    now = time.time()
    bucket = int(now // window)
    key = f"rl:{CLIENT_IP}:{client_ip(request)}:{window}:{bucket}"
    return key, window, limit, (bucket + 1) * window - now


def address_exhausted(request: HttpRequest) -> float | None:
    """Seconds to wait when the caller's address has used up its limit (counts nothing)."""
    counter = _address_counter(request)
    if counter is None:
        return None
    key, _, limit, wait = counter
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        with _lock:
            count = _known.get(key, (0, 0.0))[0] + _pending.get(key, [0])[0]
    else:
        try:
            count = int(backend.get(key) or 0)
        except Exception:
            return None
    return wait if count >= limit else None


def refusal_count(request: HttpRequest) -> float | None:
    """Count a request refused for its key (or the lack of one) against its address;
    seconds to wait when that puts the address over its limit."""
    counter = _address_counter(request)
    if counter is None:
        return None
    key, window, limit, wait = counter
    counts = counters_incr([(key, window)])
    return wait if counts is not None and counts[0] > limit else None
