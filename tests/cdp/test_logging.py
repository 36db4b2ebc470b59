"""Structured logs: one JSON object a line with the request id, an access line per
request, and no personal data or keys in any line, whatever the request carried."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from cdp.observability import PiiScrubFilter, scrub
from profiles.services import SourceKeys

BASE_DIR = Path(__file__).resolve().parents[2]

EMAIL = "ann.secret@example.com"
USER_ID = "u-secret-4711"
UNKNOWN_USER_ID = "u-unknown-4712"
CLIENT_IP = "203.0.113.9"
FORWARDED_IP = "198.51.100.10"
CONTEXT_IP = "198.51.100.23"
MADE_UP_KEY = "wk_madeUpKey0123456789"


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The production log pipeline (settings.LOGGING's JSON formatter and the console
    handler's filters) writing into a buffer, on the root logger."""
    conf: dict[str, Any] = settings.LOGGING
    configurator = logging.config.DictConfigurator(conf)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(configurator.configure_formatter(dict(conf["formatters"]["json"])))
    for name in conf["handlers"]["console"]["filters"]:
        handler.addFilter(configurator.configure_filter(dict(conf["filters"][name])))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.mark.django_db
def test_a_request_logs_json_with_its_request_id_and_no_personal_data(json_log, source: SourceKeys):
    # Given a storefront call full of personal data: an email, a user id, IP addresses,
    # and its key in the header
    write = client_with(source.write_key)
    response = write.post(
        "/api/v1/events",
        {
            "type": "identify",
            "anonymous_id": "a-logs",
            "user_id": USER_ID,
            "traits": {"email": EMAIL, "plan": "pro"},
            "context": {"ip": CONTEXT_IP},
        },
        format="json",
        REMOTE_ADDR=CLIENT_IP,
        HTTP_X_FORWARDED_FOR=FORWARDED_IP,
        HTTP_X_REQUEST_ID="trace-abc12345",
    )
    assert response.status_code == 202, response.content
    # … a lookup by user id that finds nobody (Django logs the 404 with the request)
    secret = client_with(source.secret_key)
    missing = secret.get(
        "/api/v1/profiles",
        {"user_id": UNKNOWN_USER_ID},
        REMOTE_ADDR=CLIENT_IP,
    )
    assert missing.status_code == 404
    # … and a key in a URL path (analytics.js's settings URL, a 404 here)
    assert write.get(f"/v1/projects/{MADE_UP_KEY}/settings").status_code == 404

    # When the log lines are read
    output = json_log.getvalue()
    lines = lines_of(json_log)

    # Then every line is a JSON object with the standard fields
    assert lines
    for line in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(line), line
    # … each request has an access line with its request id, route pattern, status and time
    access = [line for line in lines if line["logger"] == "cdp.access"]
    first = next(line for line in access if line["route"] == "api/v1/events")
    assert first["request_id"] == "trace-abc12345" == response["X-Request-ID"]
    assert first["method"] == "POST"
    assert first["status"] == 202
    assert first["duration_ms"] > 0
    assert "cdp_log_safe" not in first  # the internal mark is never written
    lookup = next(line for line in access if line["route"] == "api/v1/profiles")
    assert lookup["request_id"] == missing["X-Request-ID"]
    assert lookup["status"] == 404
    # … Django's own 404 lines carry the request id too
    not_found = [line for line in lines if line["logger"] == "django.request"]
    assert {line["request_id"] for line in not_found} >= {missing["X-Request-ID"]}
    # … and nothing that identifies the person or the source is anywhere
    for secret_value in (
        EMAIL,
        "ann.secret",
        USER_ID,
        UNKNOWN_USER_ID,
        CLIENT_IP,
        FORWARDED_IP,
        CONTEXT_IP,
        source.write_key,
        source.secret_key,
        MADE_UP_KEY,
    ):
        assert secret_value not in output, secret_value


def test_extra_fields_with_personal_keys_are_redacted(json_log):
    logging.getLogger("cdp.tests").warning(
        "identify from %s",
        CLIENT_IP,
        extra={
            "user_id": USER_ID,
            "anonymous_id": "a-1",
            "payload": {"email": EMAIL, "write_key": MADE_UP_KEY, "plan": "pro"},
            "authorization": f"Bearer {MADE_UP_KEY}",
            "count": 3,
            "request": object(),  # objects (Django passes its request) are dropped
        },
    )

    (line,) = lines_of(json_log)
    assert line["message"] == "identify from [ip]"
    assert line["user_id"] == line["anonymous_id"] == line["authorization"] == "[redacted]"
    assert line["payload"] == {"email": "[redacted]", "write_key": "[redacted]", "plan": "pro"}
    assert line["count"] == 3
    assert "request" not in line


def test_tracebacks_are_scrubbed(json_log):
    try:
        raise ValueError(f"no profile for {EMAIL} at {CLIENT_IP}")
    except ValueError:
        logging.getLogger("cdp.tests").exception("lookup failed")

    (line,) = lines_of(json_log)
    assert "ValueError" in line["exc_info"]
    assert EMAIL not in line["exc_info"]
    assert CLIENT_IP not in line["exc_info"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail ann@example.com now", "mail [email] now"),
        ("from 10.1.2.3 and 2001:db8::7 and ::1", "from [ip] and [ip] and [ip]"),
        ("keys wk_abcdefgh1 sk_abc-DEF_123 iv_zzzzzzzz", "keys [key] [key] [key]"),
        ("Authorization: Bearer abc.def", "Authorization: [redacted]"),
        ("sent Bearer xyz123", "sent Bearer [redacted]"),
        (
            "GET /x?user_id=u-1&anonymous_id=a-2&page=3",
            "GET /x?user_id=[redacted]&anonymous_id=[redacted]&page=3",
        ),
        ("{'userId': 'u-9', 'phone': '+4722'}", "{'userId': '[redacted]', 'phone': '[redacted]'}"),
    ],
)
def test_scrub_replaces_personal_data(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-03 14:10:28 took 12.5 ms",
        "route api/v1/segments/<slug:slug>",
        "profile 6f1c2f0e-8d1b-4d3c-9a55-0c1e2d3f4a5b merged",
        "task_outcomes on disk_usage, std::vector",
    ],
)
def test_scrub_keeps_ordinary_text(text):
    assert scrub(text) == text


def test_filter_keeps_a_broken_format_string_loggable():
    record = logging.makeLogRecord({"msg": "%d rows", "args": ("x",)})

    assert PiiScrubFilter().filter(record)
    assert record.getMessage() == "%d rows"


# --- LOG_FORMAT ------------------------------------------------------------------------

_LOG_ONE = (
    "import django, logging; django.setup(); "
    "logging.getLogger('cdp.tests').warning('mail from ann@example.com')"
)


def _log_in_a_fresh_process(**variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    env.update({"DJANGO_SETTINGS_MODULE": "cdp.settings", **variables})
    return subprocess.run(
        [sys.executable, "-c", _LOG_ONE],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variables", "is_json"),
    [
        ({"DEBUG": "false"}, True),  # production default
        ({"DEBUG": "true"}, False),  # development default
        ({"DEBUG": "true", "LOG_FORMAT": "json"}, True),
        ({"DEBUG": "false", "LOG_FORMAT": "plain"}, False),
    ],
)
def test_log_format_is_chosen_by_the_environment(variables, is_json):
    result = _log_in_a_fresh_process(**variables)

    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "cdp.tests" in x]
    if is_json:
        record = json.loads(line)
        assert record["logger"] == "cdp.tests"
        assert record["level"] == "WARNING"
        assert record["message"] == "mail from [email]"
    else:
        assert line.endswith("WARNING cdp.tests [-] mail from [email]")


def test_an_unknown_log_format_is_refused():
    result = _log_in_a_fresh_process(LOG_FORMAT="xml")

    assert result.returncode != 0
    assert "LOG_FORMAT" in result.stderr
