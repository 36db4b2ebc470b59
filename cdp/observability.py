"""Request metrics, request ids, the access log, and log records without PII.

The middleware is the first in MIDDLEWARE, so its duration covers the whole stack. The
logging pieces (filters, formatters) are named in settings.LOGGING; docs/operations.md
("Metrics and logs") describes the fields and what is scrubbed.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import decimal
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from cdp import metrics

access_logger = logging.getLogger("cdp.access")
# Set on records that are known to carry nothing to scrub (the access lines): the filter
# and the formatters skip them. Never written out.
SAFE_MARK = "cdp_log_safe"

# --- Request ids ------------------------------------------------------------------------------

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "cdp_request_id", default=None
)
_REQUEST_ID_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,99}")


def current_request_id() -> str | None:
    return _request_id.get()


def request_id_from(incoming: str | None) -> str:
    """The caller's X-Request-ID when it is a plain token (8–100 of [A-Za-z0-9._-]) and
    nothing the scrubber would hide (a key, an IP address); a new one otherwise."""
    if incoming and _REQUEST_ID_OK.fullmatch(incoming) and not _hides_something(incoming):
        return incoming
    return uuid.uuid4().hex


# --- The middleware ---------------------------------------------------------------------------

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_CLASSES = ("1xx", "1xx", "2xx", "3xx", "4xx", "5xx")
# Probes and scrapes come every few seconds: logged at DEBUG, counted all the same.
_QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})


class RequestObservabilityMiddleware:
    """Counts and times every request by URL pattern, method and status class; gives it a
    request id (X-Request-ID in and out); writes one access log line."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.access_log = bool(getattr(settings, "CDP_ACCESS_LOG", True))
        self.static_prefix = "/" + str(settings.STATIC_URL).lstrip("/")
        # (route, method, status class) -> the bound metric children; bounded by the URL
        # patterns, so it never grows with traffic.
        self._bound: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        rid = request_id_from(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = rid  # type: ignore[attr-defined]
        token = _request_id.set(rid)
        try:
            response = self.get_response(request)
            duration = time.perf_counter() - started
            match = request.resolver_match
            if match is not None:
                route = match.route or match.view_name
            elif request.path_info.startswith(self.static_prefix):
                route = "static"
            else:
                route = "unmatched"
            method = request.method if request.method in _METHODS else "other"
            status = response.status_code
            status_class = _STATUS_CLASSES[status // 100] if 100 <= status < 600 else "other"
            key = (route, method, status_class)
            bound = self._bound.get(key)
            if bound is None:
                bound = (
                    metrics.http_requests.labels(*key),
                    metrics.http_request_duration.labels(*key),
                )
                self._bound[key] = bound
            bound[0].inc()
            bound[1].observe(duration)
            response["X-Request-ID"] = rid
            if self.access_log:
                level = logging.DEBUG if route in _QUIET_ROUTES else logging.INFO
                if access_logger.isEnabledFor(level):
                    access_logger.log(
                        level,
                        "%s %s %d",
                        method,
                        route,
                        status,
                        extra={
                            "route": route,
                            "method": method,
                            "status": status,
                            "duration_ms": round(duration * 1000, 3),
                            # a URL pattern, a method, numbers: nothing to scrub
                            SAFE_MARK: True,
                        },
                    )
            return response
        finally:
            _request_id.reset(token)


# --- Scrubbing --------------------------------------------------------------------------------

# Each pattern runs only when a cheap substring test says it could match: most lines
# (access lines above all) hold none of them, and a regex scan per pattern per line
# would cost more than the rest of the request's logging.
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4})"
    r"(?![\w:])"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_KEY = re.compile(r"\b(?:wk|sk|iv)_[A-Za-z0-9_-]{6,}")
_BEARER = re.compile(r"(?i:\b(bearer|basic)\s+)[A-Za-z0-9._~+/=-]+")
# Keys whose values identify a person or grant access: redacted in extra fields, and
# in `key=value`, `key: value`, `"key": "value"` text (query strings, reprs, JSON).
PII_KEYS = frozenset(
    {
        "email",
        "phone",
        "user_id",
        "userid",
        "anonymous_id",
        "anonymousid",
        "previous_id",
        "previousid",
        "ip",
        "ip_address",
        "remote_addr",
        "authorization",
        "write_key",
        "writekey",
        "secret_key",
        "identity_secret",
        "user_hash",
        "password",
        "token",
    }
)
_PAIR = re.compile(
    r"(?i:(\b(?:user_?id|anonymous_?id|previous_?id|email|phone|ip|ip_address|remote_addr"
    r"|authorization|write_?key|secret_key|identity_secret|user_hash|password|token)"
    r"\b['\"]?\s*[:=]\s*['\"]?))(?!\[redacted\])(?i:(?:bearer|basic)\s+)?[^\s'\"&,;)}\]]+"
)
_PAIR_WORDS = (
    "user",
    "anonymous",
    "previous",
    "email",
    "phone",
    "ip",
    "addr",
    "authorization",
    "key",
    "secret",
    "hash",
    "password",
    "token",
)
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """Text with email addresses, IP addresses, API keys, bearer credentials and the
    values of identifying `key=value` pairs replaced."""
    low = text.lower()
    if ("=" in text or ":" in text) and any(w in low for w in _PAIR_WORDS):
        text = _PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if "k_" in text or "v_" in text:
        text = _KEY.sub("[key]", text)
    if "bearer" in low or "basic" in low:
        text = _BEARER.sub(lambda m: m.group(1) + " " + REDACTED, text)
    if "." in text:
        text = _IPV4.sub("[ip]", text)
    if "::" in text or text.count(":") >= 7:
        text = _IPV6.sub("[ip]", text)
    return text


def _hides_something(text: str) -> bool:
    return scrub(text) != text


def _norm_key(key: object) -> str:
    return str(key).lower().replace("-", "_")


def scrub_value(value: Any, depth: int = 0) -> Any:
    """An extra field's value, safe to log: strings scrubbed, PII keys of mappings
    redacted, plain scalars kept; anything else (a request object…) becomes None."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, uuid.UUID | dt.datetime | dt.date | decimal.Decimal):
        return value
    if depth < 4 and isinstance(value, dict):
        return {
            k: REDACTED if _norm_key(k) in PII_KEYS else scrub_value(v, depth + 1)
            for k, v in value.items()
        }
    if depth < 4 and isinstance(value, list | tuple):
        return [scrub_value(v, depth + 1) for v in value]
    return None


_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
    SAFE_MARK,
}


def _request_context(record: logging.LogRecord) -> None:
    if getattr(record, "request_id", None) is not None:
        return
    # Django logs a 4xx/5xx answer after the middleware returned: its record carries
    # the request, which carries the id.
    rid = _request_id.get() or getattr(getattr(record, "request", None), "request_id", None)
    if rid is not None:
        record.request_id = rid


class RequestContextFilter(logging.Filter):
    """Adds the current request's id to every record logged while it is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        _request_context(record)
        return True


class PiiScrubFilter(logging.Filter):
    """Scrubs a record before any formatter sees it: the rendered message, and the extra
    fields (PII keys redacted, objects such as Django's `request` dropped). The
    formatters scrub their output once more (tracebacks, anything missed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SAFE_MARK, False):
            return True
        if isinstance(record.msg, dict):
            record.msg = scrub_value(record.msg)
        else:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep the template only
                message = str(record.msg)
            record.msg, record.args = scrub(message), None
        for key in [k for k in record.__dict__ if k not in _STANDARD_ATTRS]:
            if _norm_key(key) in PII_KEYS:
                setattr(record, key, REDACTED)
            else:
                clean = scrub_value(record.__dict__[key])
                if clean is None and record.__dict__[key] is not None:
                    delattr(record, key)
                else:
                    setattr(record, key, clean)
        return True


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object a line: timestamp (UTC, ISO 8601), level, logger, message,
    request_id, then the extra fields (route, method, status, duration_ms on access
    lines). Every value and the traceback are scrubbed."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s %(request_id)s")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", True)
        super().__init__(**kwargs)

    def format(self, record: logging.LogRecord) -> str:
        _request_context(record)
        return super().format(record)

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.pop(SAFE_MARK, False):
            return log_data
        # Every value once more (without the filter, or added by the formatter).
        return {
            k: REDACTED if _norm_key(k) in PII_KEYS and v is not None else _scrub_json(v)
            for k, v in log_data.items()
        }

    def formatException(self, ei: Any) -> str:
        return scrub(logging.Formatter.formatException(self, ei))

    def formatStack(self, stack_info: str) -> str:
        return scrub(stack_info)


def _scrub_json(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict | list | tuple):
        return scrub_value(value)
    return value


class PlainFormatter(logging.Formatter):
    """Development lines: time, level, logger, [request id], message; scrubbed too."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        kwargs.setdefault("defaults", {"request_id": "-"})
        super().__init__(**kwargs)

    def format(self, record: logging.LogRecord) -> str:
        _request_context(record)
        line = super().format(record)
        return line if getattr(record, SAFE_MARK, False) else scrub(line)
