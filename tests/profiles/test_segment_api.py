"""The Segment-compatible tracking API (/v1/…, DESIGN.md §4): the translation, the HTTP
contract, and the real client libraries (segment-analytics-python, rudder-sdk-python)
pointed at a live server."""

from __future__ import annotations

import base64
import gc
import gzip
import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import rudderstack.analytics as rudder
import rudderstack.analytics.request as rudder_request
import segment.analytics as segment_analytics
import segment.analytics.request as segment_request
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.keys import user_hash
from profiles.models import Event, Identity, IdentityKind, Profile
from profiles.segment import (
    segment_batch_translate,
    segment_errors,
    segment_message_translate,
)
from profiles.services import SourceKeys, source_create
from profiles.validation import EventIn

pytestmark = pytest.mark.django_db

ORIGIN = "https://shop.example"


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def post(
    path: str,
    body: Any,
    *,
    key: str | None = None,
    content_type: str = "application/json",
    raw: bytes | None = None,
    **headers: Any,
) -> Any:
    client = Client()
    if key is not None:
        headers.setdefault("HTTP_AUTHORIZATION", basic(key))
    data = raw if raw is not None else orjson.dumps(body)
    response = client.post(path, data=data, content_type=content_type, **headers)
    assert response.status_code < 500, response.content
    return response


def error_of(response: Any, status: int, code: str = "invalid") -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def message(**fields: Any) -> dict[str, Any]:
    """A message the way analytics.js / analytics-python send it, Segment's extras included."""
    return {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-1",
        "properties": {"sku": "S1"},
        "context": {"library": {"name": "analytics.js", "version": "next-1.84.3"}},
        "integrations": {"All": True},
        "_metadata": {"bundled": ["Segment.io"], "unbundled": []},
        "writeKey": "ignored",
        "channel": "server",
        "version": 2,
        "receivedAt": "2020-01-01T00:00:00Z",
        **fields,
    }


# --- translation (pure) -----------------------------------------------------------------


def test_translation_maps_camel_case_and_drops_segment_bookkeeping():
    # Given a Segment track message with every key analytics.js and analytics-python add
    msg = message(
        userId="u1",
        messageId="m1",
        userHash="ab" * 32,
        timestamp="2024-05-01T10:00:00.000Z",
        sentAt="2024-05-01T10:00:01.000Z",
        context={
            "userAgent": "Mozilla/5.0",
            "ip": "203.0.113.9",
            "library": {"name": "analytics-python", "version": "2.4.0"},
            "page": {"path": "/p/1"},
        },
    )

    # When it is translated
    event = segment_message_translate(msg)

    # Then it is the native shape, with context kept as context
    assert event == {
        "type": "track",
        "event": "Product Viewed",
        "user_id": "u1",
        "anonymous_id": "anon-1",
        "message_id": "m1",
        "user_hash": "ab" * 32,
        "timestamp": "2024-05-01T10:00:00.000Z",
        "sent_at": "2024-05-01T10:00:01.000Z",
        "properties": {"sku": "S1"},
        "context": {
            "user_agent": "Mozilla/5.0",
            "ip": "203.0.113.9",
            "library": {"name": "analytics-python", "version": "2.4.0"},
            "page": {"path": "/p/1"},
        },
    }
    EventIn.model_validate(event)


def test_translation_batch_sent_at_applies_only_to_messages_without_their_own():
    own = message(messageId="own", sentAt="2024-01-01T00:00:05Z")
    bare = message(messageId="bare")

    translated = segment_batch_translate([own, bare], sent_at="2024-01-01T00:00:09Z")

    assert [e["sent_at"] for e in translated.events] == [
        "2024-01-01T00:00:05Z",
        "2024-01-01T00:00:09Z",
    ]


def test_translation_uses_original_timestamp_when_there_is_no_timestamp():
    event = segment_message_translate(message(originalTimestamp="2024-01-01T00:00:00Z"))

    assert event["timestamp"] == "2024-01-01T00:00:00Z"


def test_translation_type_of_the_endpoint_wins():
    event = segment_message_translate(message(type="identify"), type_="track")

    assert event["type"] == "track"


def test_translation_page_category_and_group_id_become_properties():
    page = segment_message_translate(
        {"type": "page", "anonymousId": "a", "name": "Shoes", "category": "Catalog"}
    )
    group = segment_message_translate(
        {"type": "group", "userId": "u1", "groupId": 42, "traits": {"plan": "team"}}
    )

    assert page["properties"] == {"category": "Catalog"}
    assert page["name"] == "Shoes"
    assert group["properties"] == {"group_id": 42}
    assert group["traits"] == {"plan": "team"}


def test_translation_takes_rudderstack_identify_traits_from_context():
    # RudderStack's SDKs put identify's traits in context.traits only
    event = segment_message_translate(
        {"type": "identify", "userId": "u1", "context": {"traits": {"plan": "pro"}}}
    )

    assert event["traits"] == {"plan": "pro"}


def test_translation_merges_the_batch_context_under_the_message_context():
    translated = segment_batch_translate(
        [message(context={"locale": "fr-FR"})],
        context={"device": {"type": "phone"}, "locale": "en-US"},
    )

    assert translated.events[0]["context"] == {"device": {"type": "phone"}, "locale": "fr-FR"}


def test_translation_refuses_non_objects_and_oversized_messages_by_index():
    big = message(properties={"blob": "x" * 40_000})

    translated = segment_batch_translate(
        [message(), "nope", big, message()], max_message_bytes=32 * 1024
    )

    assert translated.positions == [0, 3]
    assert [r["index"] for r in translated.rejected] == [1, 2]


def test_native_errors_are_named_in_segment_terms():
    errors = segment_errors(
        {
            "non_field_errors": ["at least one of user_id or anonymous_id is required"],
            "sent_at": ["too far"],
            "properties.revenue": ["bad"],
        }
    )

    assert errors == {
        "non_field_errors": ["at least one of userId or anonymousId is required"],
        "sentAt": ["too far"],
        "properties.revenue": ["bad"],
    }


ids = st.one_of(st.text(min_size=1, max_size=20), st.integers(min_value=0, max_value=10**12))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)
segment_messages = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["track", "identify", "page", "screen", "group"]),
        "event": st.text(min_size=1, max_size=30),
        "anonymousId": ids,
    },
    optional={
        "userId": ids,
        "name": st.text(max_size=30),
        "category": st.text(max_size=10),
        "groupId": ids,
        "properties": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "traits": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
        "context": st.dictionaries(
            st.sampled_from(["userAgent", "ip", "library", "page", "locale"]), json_values
        ),
        "integrations": st.dictionaries(st.text(max_size=8), st.booleans()),
        "_metadata": st.dictionaries(st.text(max_size=8), json_values),
        "channel": st.sampled_from(["server", "client", "mobile"]),
        "originalTimestamp": st.just("2024-01-01T00:00:00Z"),
        "receivedAt": st.just("2024-01-01T00:00:00Z"),
        "writeKey": st.text(max_size=10),
        "version": st.integers(),
    },
)


@settings(max_examples=200, deadline=None)
@given(segment_messages)
def test_any_well_formed_segment_message_translates_to_a_valid_native_event(msg):
    # Segment's extra keys never reach EventIn, which forbids unknown fields
    EventIn.model_validate(segment_message_translate(msg))


# --- the HTTP contract ------------------------------------------------------------------


def test_track_with_basic_auth_is_stored(source):
    # Given analytics.js's single track call with the write key as basic-auth user
    response = post("/v1/track", message(messageId="m1", userId="u1"), key=source.write_key)

    # Then Segment's answer, and the event stored through the native ingestion
    assert response.status_code == 200, response.content
    assert response.json() == {
        "success": True,
        "accepted": 1,
        "duplicates": 0,
        "dropped": 0,
        "rejected": [],
    }
    event = Event.objects.get()
    assert (event.type, event.event, event.user_id, event.anonymous_id, event.message_id) == (
        "track",
        "Product Viewed",
        "u1",
        "anon-1",
        "m1",
    )
    assert event.properties == {"sku": "S1"}
    assert event.context == {"library": {"name": "analytics.js", "version": "next-1.84.3"}}


@pytest.mark.parametrize(
    ("path", "kind", "name"),
    [
        ("/v1/identify", "identify", "identify"),
        ("/v1/page", "page", "Home"),
        ("/v1/screen", "screen", "Home"),
        ("/v1/group", "group", "group"),
        ("/v1/i", "identify", "identify"),
        ("/v1/p", "page", "Home"),
        ("/v1/s", "screen", "Home"),
        ("/v1/g", "group", "group"),
        ("/v1/t", "track", "Product Viewed"),
    ],
)
def test_every_single_call_and_its_short_alias_is_accepted(source, path, kind, name):
    body = message(name="Home", userId="u1", groupId="g1", traits={"plan": "pro"})
    del body["type"]  # implied by the path

    response = post(path, body, key=source.write_key)

    assert response.status_code == 200, response.content
    event = Event.objects.get()
    assert (event.type, event.event) == (kind, name)


def test_alias_links_the_previous_id(source):
    post("/v1/track", message(messageId="m1"), key=source.write_key)

    response = post(
        "/v1/a", {"previousId": "anon-1", "userId": "u9", "messageId": "m2"}, key=source.write_key
    )

    assert response.status_code == 200, response.content
    user = Identity.objects.get(kind=IdentityKind.USER_ID, value="u9")
    anon = Identity.objects.get(kind=IdentityKind.ANONYMOUS_ID, value="anon-1")
    assert user.profile_id == anon.profile_id


def test_batch_text_plain_with_write_key_in_the_body_gets_cors_headers(source):
    # Given a browser's sendBeacon: text/plain, no Authorization header, writeKey in the body
    body = {"batch": [message(messageId="b1")], "writeKey": source.write_key}

    response = post("/v1/batch", body, content_type="text/plain;charset=UTF-8", HTTP_ORIGIN=ORIGIN)

    # Then it is accepted and the allowed origin may read the answer
    assert response.status_code == 200, response.content
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert Event.objects.filter(message_id="b1").exists()


def test_write_key_from_a_foreign_origin_is_403(source):
    body = {"batch": [message()], "writeKey": source.write_key}

    response = post("/v1/b", body, content_type="text/plain", HTTP_ORIGIN="https://evil.example")

    error_of(response, 403, "forbidden")
    assert "Access-Control-Allow-Origin" not in response
    assert Event.objects.count() == 0


def test_bearer_key_is_accepted(source):
    response = post(
        "/v1/batch",
        {"batch": [message()]},
        HTTP_AUTHORIZATION=f"Bearer {source.write_key}",
    )

    assert response.status_code == 200, response.content


def test_secret_key_is_trusted_with_user_ids(verified_source):
    # Given a source that verifies user ids, called with its secret key (a server)
    response = post(
        "/v1/identify", {"userId": "u1", "anonymousId": "a1"}, key=verified_source.secret_key
    )

    # Then no userHash is needed and the user id is linked
    assert response.status_code == 200, response.content
    assert Identity.objects.filter(kind=IdentityKind.USER_ID, value="u1").exists()


def test_user_hash_verifies_a_browser_identify(verified_source):
    signed = user_hash(verified_source.source.identity_secret, "u1")

    good = post(
        "/v1/identify",
        {"userId": "u1", "anonymousId": "a1", "userHash": signed},
        key=verified_source.write_key,
    )
    bad = post(
        "/v1/identify",
        {"userId": "u2", "anonymousId": "a2", "userHash": "0" * 64},
        key=verified_source.write_key,
    )

    assert good.status_code == 200, good.content
    assert Identity.objects.filter(kind=IdentityKind.USER_ID, value="u1").exists()
    # The error is named in Segment's terms
    assert "userHash" in error_of(bad, 400)["details"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_AUTHORIZATION": basic("wk_not_a_real_key")},
        {"HTTP_AUTHORIZATION": "Basic !!!not-base64"},
        {"HTTP_AUTHORIZATION": "Token abc"},
        {"HTTP_AUTHORIZATION": "Bearer sk_revoked"},
    ],
    ids=["missing", "unknown", "malformed", "other_scheme", "bad_bearer"],
)
def test_bad_or_missing_key_is_401(db, headers):
    response = post("/v1/batch", {"batch": [message()]}, **headers)

    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] in ("invalid_key", "unauthenticated")
    # No Basic challenge: a browser would pop up a login dialog
    assert not response.get("WWW-Authenticate", "").lower().startswith("basic")


def test_unknown_write_key_in_the_body_is_401(db):
    response = post("/v1/batch", {"batch": [message()], "writeKey": "wk_nope"})

    error_of(response, 401, "invalid_key")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b'{"writeKey": "wk_x", "batch": [', 400, "malformed_json"),
        (b'{"batch": [], "pad": "' + b"x" * (600 * 1024) + b'"}', 413, "payload_too_large"),
    ],
    ids=["malformed", "too_large"],
)
def test_body_problems_without_an_authorization_header_are_4xx(db, raw, status, code):
    # Without a header the key is read from the body, so the body is parsed first
    response = post("/v1/batch", None, raw=raw, content_type="text/plain")

    error_of(response, status, code)


def test_gzip_body_is_accepted(source):
    raw = gzip.compress(orjson.dumps({"batch": [message(messageId="gz")]}))

    response = post("/v1/batch", None, raw=raw, key=source.write_key, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 200, response.content
    assert Event.objects.filter(message_id="gz").exists()


def test_gzip_bomb_stops_at_the_500_kb_limit(source):
    # Given 50 MB of JSON whitespace that gzips to about 50 KB
    inner = b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}"
    raw = gzip.compress(inner, compresslevel=9)
    assert len(raw) < 500 * 1024

    response = post("/v1/batch", None, raw=raw, key=source.write_key, HTTP_CONTENT_ENCODING="gzip")

    # Then it is refused as too large (decompression stopped at the limit)
    error = error_of(response, 413, "payload_too_large")
    assert "body" in error["details"]


def test_corrupt_gzip_is_400(source):
    response = post(
        "/v1/batch",
        None,
        raw=b"\x1f\x8b not gzip at all",
        key=source.write_key,
        HTTP_CONTENT_ENCODING="gzip",
    )

    error_of(response, 400, "malformed_json")


def test_truncated_gzip_is_400(source):
    raw = gzip.compress(orjson.dumps({"batch": [message()]}))[:-12]

    response = post("/v1/batch", None, raw=raw, key=source.write_key, HTTP_CONTENT_ENCODING="gzip")

    error_of(response, 400, "malformed_json")


def test_deflate_body_is_accepted(source):
    raw = zlib.compress(orjson.dumps({"batch": [message(messageId="df")]}))

    response = post(
        "/v1/batch", None, raw=raw, key=source.write_key, HTTP_CONTENT_ENCODING="deflate"
    )

    assert response.status_code == 200, response.content


def test_unknown_content_encoding_is_415(source):
    response = post(
        "/v1/batch",
        None,
        raw=b"whatever",
        key=source.write_key,
        HTTP_CONTENT_ENCODING="br",
    )

    error_of(response, 415, "unsupported_media_type")


def test_malformed_json_is_400(source):
    response = post("/v1/batch", None, raw=b'{"batch": [', key=source.write_key)

    error_of(response, 400, "malformed_json")


# --- limits: as /api/v1/events (413 for a body, rejected by index inside a batch) ---------


def test_batch_body_over_500_kb_is_413(source):
    batch = [message(messageId=f"m{i}", properties={"blob": "x" * 2000}) for i in range(300)]
    raw = orjson.dumps({"batch": batch})
    assert len(raw) > 500 * 1024

    error = error_of(
        post("/v1/batch", None, raw=raw, key=source.write_key), 413, "payload_too_large"
    )

    assert "body" in error["details"]
    assert Event.objects.count() == 0


def test_batch_of_501_messages_is_413_naming_batch(source):
    batch = [{"type": "page", "anonymousId": "a1"} for _ in range(501)]

    error = error_of(
        post("/v1/batch", {"batch": batch}, key=source.write_key), 413, "payload_too_large"
    )

    assert "batch" in error["details"]


def test_single_message_over_32_kb_is_413(source):
    response = post("/v1/track", message(properties={"blob": "x" * 33_000}), key=source.write_key)

    error = error_of(response, 413, "payload_too_large")
    assert "body" in error["details"]


def test_message_over_32_kb_in_a_batch_is_rejected_by_index(source):
    batch = [
        message(messageId="ok1"),
        message(messageId="big", properties={"blob": "x" * 33_000}),
        message(messageId="ok2"),
    ]

    response = post("/v1/batch", {"batch": batch}, key=source.write_key)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    assert set(Event.objects.values_list("message_id", flat=True)) == {"ok1", "ok2"}


def test_partial_batch_keeps_the_valid_messages(source):
    # Given a batch with a non-object, a message without ids and one without a type
    batch = [
        message(messageId="v1"),
        "not a message",
        {"type": "track", "event": "x", "messageId": "noid"},
        {"event": "x", "anonymousId": "a1"},
        message(messageId="v2", type="screen", name="Cart"),
    ]

    response = post("/v1/batch", {"batch": batch, "writeKey": source.write_key})

    # Then the valid ones are stored and the others are listed by their index, in
    # Segment's field names
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["success"] is True
    assert body["accepted"] == 2
    rejected = {r["index"]: r["errors"] for r in body["rejected"]}
    assert set(rejected) == {1, 2, 3}
    assert "userId" in " ".join(rejected[2]["non_field_errors"])
    assert "type" in rejected[3]
    assert set(Event.objects.values_list("message_id", flat=True)) == {"v1", "v2"}


def test_batch_with_nothing_valid_is_400(source):
    batch = [{"type": "track", "anonymousId": "a1"}, {"type": "nope", "anonymousId": "a1"}]

    error = error_of(post("/v1/batch", {"batch": batch}, key=source.write_key), 400)

    assert [r["index"] for r in error["details"]["rejected"]] == [0, 1]
    assert Event.objects.count() == 0


def test_single_message_with_nothing_valid_names_the_field(source):
    error = error_of(post("/v1/track", {"event": "x"}, key=source.write_key), 400)

    assert "anonymousId" in error["message"]
    assert Event.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [([1, 2], "body"), ({"batch": "x"}, "batch"), ({"batch": []}, "batch"), ({}, "batch")],
)
def test_batch_shape_errors_name_the_field(source, body, field):
    error = error_of(post("/v1/batch", body, key=source.write_key), 400)

    assert field in error["details"]


def test_resent_batch_is_not_stored_twice(source):
    batch = {"batch": [message(messageId=f"m{i}") for i in range(3)]}
    post("/v1/batch", batch, key=source.write_key)

    again = post("/v1/batch", batch, key=source.write_key)

    assert again.status_code == 200, again.content
    assert again.json()["duplicates"] == 3
    assert again.json()["accepted"] == 0
    assert Event.objects.count() == 3
    assert Profile.objects.get().event_count == 3


def test_same_message_id_on_events_api_and_segment_api_is_one_event(source, write_client):
    # The same dedup as /api/v1/events: (source, message_id)
    write_client.post(
        "/api/v1/events",
        {"type": "track", "event": "x", "anonymous_id": "a1", "message_id": "shared"},
        format="json",
    )

    response = post("/v1/track", message(messageId="shared"), key=source.write_key)

    assert response.json()["duplicates"] == 1
    assert Event.objects.count() == 1


# --- timestamps and context ---------------------------------------------------------------


def test_batch_sent_at_corrects_the_client_clock(source):
    # Given a client whose clock is one hour behind: the event happened 10 s before it sent
    client_now = datetime.now(UTC) - timedelta(hours=1)
    happened = client_now - timedelta(seconds=10)
    body = {"batch": [message(timestamp=iso(happened))], "sentAt": iso(client_now)}

    post("/v1/batch", body, key=source.write_key)

    # Then the stored time is 10 s before the server received it
    event = Event.objects.get()
    assert abs(event.timestamp - (event.received_at - timedelta(seconds=10))) < timedelta(seconds=1)
    assert event.original_timestamp is not None
    assert abs(event.original_timestamp - happened) < timedelta(milliseconds=1)


def test_historical_import_without_sent_at_is_kept(source):
    ts = datetime(2023, 3, 1, 12, 0, tzinfo=UTC)

    post("/v1/batch", {"batch": [message(timestamp=iso(ts))]}, key=source.write_key)

    assert Event.objects.get().timestamp == ts


def test_context_user_agent_feeds_bot_filtering(source):
    msg = message(context={"userAgent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})

    post("/v1/track", msg, key=source.write_key)

    event = Event.objects.get()
    assert event.is_bot is True
    assert "userAgent" not in event.context
    assert Profile.objects.get().event_count == 0


# --- analytics.js settings ----------------------------------------------------------------


def test_settings_point_analytics_js_at_this_server(source):
    response = Client().get(f"/v1/projects/{source.write_key}/settings", HTTP_ORIGIN=ORIGIN)

    assert response.status_code == 200, response.content
    segmentio = response.json()["integrations"]["Segment.io"]
    assert segmentio["apiKey"] == source.write_key
    assert segmentio["apiHost"] == "testserver/v1"
    assert segmentio["protocol"] == "http"
    assert response["Access-Control-Allow-Origin"] == ORIGIN


def test_settings_for_an_unknown_or_secret_key_are_404(source):
    for key in ("wk_unknown", source.secret_key):
        response = Client().get(f"/v1/projects/{key}/settings")

        error_of(response, 404, "not_found")


def test_preflight_allows_analytics_js_headers(db):
    response = Client().options(
        "/v1/b",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type,x-retry-count",
    )

    assert response.status_code == 204
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed


def test_get_on_batch_is_405(source):
    response = Client().get("/v1/batch", HTTP_AUTHORIZATION=basic(source.write_key))

    error_of(response, 405, "method_not_allowed")


# --- the real client libraries against a live server --------------------------------------


@pytest.fixture
def live_source(transactional_db: Any) -> Iterator[SourceKeys]:
    yield source_create(name="Live shop")
    # The libraries keep a module-level keep-alive session; closing it ends the live
    # server's request thread now, not at the end of the test session.
    segment_request._session.close()
    rudder_request._session.close()
    gc.collect()  # a response kept by an APIError holds its socket until collected
    for thread in threading.enumerate():
        if thread.name.endswith("(process_request_thread)"):
            thread.join(timeout=5)


def _send_everything(client: Any, prefix: str) -> None:
    client.identify(
        user_id=f"{prefix}-u1",
        anonymous_id=f"{prefix}-a1",
        traits={"email": f"{prefix}@example.com", "plan": "pro"},
    )
    client.track(
        user_id=f"{prefix}-u1",
        event="Order Completed",
        properties={"revenue": 42.5, "currency": "EUR"},
        message_id=f"{prefix}-order-1",
    )
    client.page(user_id=f"{prefix}-u1", category="Docs", name="Pricing", properties={"path": "/p"})
    client.screen(user_id=f"{prefix}-u1", name="Home")
    client.group(user_id=f"{prefix}-u1", group_id="team-7", traits={"seats": 5})
    client.alias(previous_id=f"{prefix}-a1", user_id=f"{prefix}-u1")


def _assert_everything_stored(prefix: str) -> None:
    events = {e.type: e for e in Event.objects.filter(user_id=f"{prefix}-u1")}
    assert set(events) == {"identify", "track", "page", "screen", "group", "alias"}
    track = events["track"]
    assert (track.event, track.message_id) == ("Order Completed", f"{prefix}-order-1")
    assert track.properties == {"revenue": 42.5, "currency": "EUR"}
    assert track.context["library"]["name"] == "analytics-python"
    assert (events["page"].event, events["page"].properties) == (
        "Pricing",
        {"category": "Docs", "path": "/p"},
    )
    assert events["screen"].event == "Home"
    assert events["group"].properties == {"group_id": "team-7"}
    profile = Profile.objects.get(identities__value=f"{prefix}-u1")
    assert profile.traits["plan"] == "pro"
    assert Identity.objects.get(value=f"{prefix}-a1").profile_id == profile.pk
    assert profile.purchase_count == 1
    for event in events.values():
        assert abs(event.timestamp - event.received_at) < timedelta(seconds=30)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("gzip_body", [False, True], ids=["json", "gzip"])
def test_segment_analytics_python_sync(live_server, live_source, gzip_body):
    # Given analytics-python pointed at this server (the host is the only change)
    client = segment_analytics.Client(
        live_source.write_key, host=live_server.url, sync_mode=True, gzip=gzip_body
    )

    # When it sends every kind of call
    _send_everything(client, "seg")

    # Then each is stored with its type, name, properties and identity
    _assert_everything_stored("seg")


@pytest.mark.django_db(transaction=True)
def test_segment_analytics_python_batches_with_flush(live_server, live_source):
    errors: list[Any] = []
    client = segment_analytics.Client(
        live_source.write_key,
        host=live_server.url,
        on_error=lambda exc, batch: errors.append(exc),
        max_retries=0,
    )

    _send_everything(client, "segq")
    client.flush()
    client.join()

    assert errors == []
    _assert_everything_stored("segq")


@pytest.mark.django_db(transaction=True)
def test_rudder_sdk_python(live_server, live_source):
    # Given RudderStack's SDK (gzip by default) pointed at this server
    client = rudder.Client(live_source.write_key, host=live_server.url, sync_mode=True)

    _send_everything(client, "rud")

    _assert_everything_stored("rud")


@pytest.mark.django_db(transaction=True)
def test_real_client_resend_is_not_stored_twice(live_server, live_source):
    client = segment_analytics.Client(live_source.write_key, host=live_server.url, sync_mode=True)

    for _ in range(2):
        client.track(anonymous_id="a1", event="Signed Up", message_id="once")

    assert Event.objects.filter(message_id="once").count() == 1


@pytest.mark.django_db(transaction=True)
def test_real_client_with_a_slow_clock_is_corrected(live_server, live_source, monkeypatch):
    # Given a machine whose clock is two hours behind: analytics-python stamps sentAt with it
    skew = timedelta(hours=2)

    class SlowClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) - skew

    monkeypatch.setattr(segment_request, "datetime", SlowClock)
    client = segment_analytics.Client(live_source.write_key, host=live_server.url, sync_mode=True)
    happened = datetime.now(UTC) - skew - timedelta(minutes=5)  # by that clock, 5 min ago

    # When it sends an event from five minutes ago
    client.track(anonymous_id="a1", event="Cart Viewed", timestamp=happened)

    # Then it is stored five minutes before it arrived, not two hours earlier
    event = Event.objects.get()
    assert abs(event.timestamp - (event.received_at - timedelta(minutes=5))) < timedelta(seconds=5)


@pytest.mark.django_db(transaction=True)
def test_real_client_with_a_bad_key_gets_401(live_server, live_source):
    client = segment_analytics.Client("wk_wrong", host=live_server.url, sync_mode=True)

    with pytest.raises(segment_request.APIError) as caught:
        client.track(anonymous_id="a1", event="x")

    assert caught.value.status == 401
    assert Event.objects.count() == 0
