"""The decision log's writer, off the request path.

With Redis (REDIS_URL), `/decide` appends its rows to a Redis list in one RPUSH, and a
Celery task (`rules.tasks.decisions_drain`, every few seconds on beat) moves them into
the database in batches. A web process therefore holds nothing: stopping or killing it
loses no decision. (Granian's workers, for one, exit without running `atexit`.)

Without Redis (the embedded default), or while Redis is unreachable, rows wait in an
in-process buffer that a background thread writes every FLUSH_SECONDS (or at FLUSH_ROWS
rows) and that is flushed at interpreter exit. A failed write is retried on the next
flush; past MAX_ROWS the oldest rows are dropped and counted.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings

from cdp.metrics import decisions_dropped

logger = logging.getLogger(__name__)

QUEUE_KEY = "cdp:decisions:queue"
DRAIN_LOCK_KEY = "cdp:decisions:drain-lock"
DRAIN_BATCH = 2000
FLUSH_SECONDS = 1.0
FLUSH_ROWS = 500
MAX_ROWS = 200_000

_lock = threading.Lock()
_wake = threading.Event()
_rows: list[dict[str, Any]] = []
_thread: threading.Thread | None = None
_pid: int | None = None
_redis: Any = None
_redis_down_until = 0.0
RETRY_AFTER = 5.0
# The background writer starts on the first buffered row. Tests turn it off and call
# flush() themselves, so rows are written inside the test's transaction.
autostart = True


def _client() -> Any:
    """Our own connection pool to Redis (None without REDIS_URL)."""
    global _redis
    if not settings.REDIS_URL:
        return None
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5
        )
    return _redis


def _encode(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row)


def _decode(raw: bytes) -> dict[str, Any]:
    row = orjson.loads(raw)
    row["decided_at"] = datetime.fromisoformat(row["decided_at"])
    row["id"] = uuid.UUID(row["id"])
    return row


def enqueue(rows: list[dict[str, Any]]) -> None:
    """Hand rows to the writer: one RPUSH to Redis, else (no Redis, or Redis failed in
    the last RETRY_AFTER seconds) the in-process buffer."""
    global _redis_down_until
    client = _client()
    if client is not None and time.monotonic() >= _redis_down_until:
        try:
            client.rpush(QUEUE_KEY, *[_encode(r) for r in rows])
            return
        except Exception:
            _redis_down_until = time.monotonic() + RETRY_AFTER
            logger.warning("decision log: Redis unreachable, buffering in process", exc_info=True)
    _buffer(rows)


def _buffer(rows: list[dict[str, Any]]) -> None:
    global _rows
    with _lock:
        _rows.extend(rows)
        if len(_rows) > MAX_ROWS:
            dropped = len(_rows) - MAX_ROWS
            _rows = _rows[dropped:]
            decisions_dropped.inc(dropped)
        full = len(_rows) >= FLUSH_ROWS
    if autostart:
        _ensure_thread()
        if full:
            _wake.set()


def discard() -> None:
    """Drop what is waiting, here and in Redis (tests)."""
    global _rows
    with _lock:
        _rows = []
    client = _client()
    if client is not None:
        client.delete(QUEUE_KEY)


def pending() -> int:
    """Rows waiting to be written (here and in Redis)."""
    with _lock:
        here = len(_rows)
    client = _client()
    return here + (int(client.llen(QUEUE_KEY)) if client is not None else 0)


def _flush_local() -> int:
    global _rows
    from rules.services import decisions_write

    with _lock:
        batch, _rows = _rows, []
    if not batch:
        return 0
    try:
        decisions_write(rows=batch)
    except Exception:
        logger.exception("decision log: %d rows kept for the next flush", len(batch))
        with _lock:
            _rows = batch + _rows
        return 0
    return len(batch)


def drain(*, max_rows: int | None = None) -> int:
    """Move queued rows from Redis into the database, in batches; one drainer at a time.
    A row is removed from the queue only after its batch is written (writes are
    idempotent by decision id, so a crash between the two repeats, never loses)."""
    client = _client()
    if client is None:
        return 0
    if not client.set(DRAIN_LOCK_KEY, os.getpid(), nx=True, ex=300):
        return 0
    from rules.services import decisions_write

    written = 0
    try:
        while max_rows is None or written < max_rows:
            raw = client.lrange(QUEUE_KEY, 0, DRAIN_BATCH - 1)
            if not raw:
                break
            decisions_write(rows=[_decode(r) for r in raw])
            client.ltrim(QUEUE_KEY, len(raw), -1)
            written += len(raw)
    finally:
        client.delete(DRAIN_LOCK_KEY)
    return written


def flush() -> int:
    """Write everything waiting now, from this process's buffer and from Redis."""
    return _flush_local() + drain()


def _run() -> None:
    from django.db import connection

    while True:
        _wake.wait(FLUSH_SECONDS)
        _wake.clear()
        try:
            connection.close_if_unusable_or_obsolete()
            _flush_local()
        except Exception:  # never let the writer die
            logger.exception("decision log writer")


def _ensure_thread() -> None:
    """One writer per process (started lazily, and again in a forked child)."""
    global _thread, _pid
    if _thread is not None and _pid == os.getpid() and _thread.is_alive():
        return
    with _lock:
        if _thread is not None and _pid == os.getpid() and _thread.is_alive():
            return
        _pid = os.getpid()
        _thread = threading.Thread(target=_run, name="cdp-decision-log", daemon=True)
        _thread.start()


atexit.register(_flush_local)
