"""The decision log's writer: `/decide` appends rows to an in-process buffer; a
background thread writes them in batches (every FLUSH_SECONDS or FLUSH_ROWS rows), and
the buffer is flushed at interpreter exit, so a normal shutdown loses nothing. A failed
write is retried on the next flush (the buffer is bounded: past MAX_ROWS the oldest
rows are dropped and counted)."""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from cdp.metrics import decisions_dropped

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_ROWS = 500
MAX_ROWS = 200_000

_lock = threading.Lock()
_wake = threading.Event()
_rows: list[dict[str, Any]] = []
_thread: threading.Thread | None = None
_pid: int | None = None
# The background writer starts on the first row. Tests turn it off and call flush()
# themselves, so rows are written inside the test's transaction.
autostart = True


def enqueue(rows: list[dict[str, Any]]) -> None:
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
    if full and autostart:
        _wake.set()


def discard() -> None:
    """Drop what is buffered (tests)."""
    global _rows
    with _lock:
        _rows = []


def pending() -> int:
    with _lock:
        return len(_rows)


def flush() -> int:
    """Write what is buffered now (any thread). Returns the rows written."""
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


def _run() -> None:
    from django.db import connection

    while True:
        _wake.wait(FLUSH_SECONDS)
        _wake.clear()
        try:
            connection.close_if_unusable_or_obsolete()
            flush()
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


atexit.register(flush)
