"""The HTTP contract of POST /api/v1/events (DESIGN.md §4)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from rest_framework.test import APIClient

from profiles.ingestion import schemas_invalidate
from profiles.keys import user_hash
from profiles.models import Event, EventSchema, Identity, IdentityKind, Profile
from profiles.services import SourceKeys
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

URL = "/api/v1/events"


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "page_scrolled", "anonymous_id": "a1", **fields}


def send_raw(client: APIClient, raw: bytes, content_type: str = "application/json") -> Any:
    response = client.post(URL, data=raw, content_type=content_type)
    assert response.status_code < 500, response.content
    return response


def send(client: APIClient, body: Any) -> Any:
    response = post_events(client, body)
    assert response.status_code < 500, response.content
    return response


def error_of(response: Any, status: int, code: str = "invalid") -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


def keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


# --- validation errors name the field --------------------------------------------------


def test_missing_both_ids_names_them(write_client):
    # Given an event with neither user_id nor anonymous_id
    response = send(write_client, {"type": "track", "event": "x"})

    # Then 400, and the message tells which fields are missing
    error = error_of(response, 400)
    text = error["message"] + orjson.dumps(error["details"]).decode()
    assert "user_id" in text
    assert "anonymous_id" in text
    assert Event.objects.count() == 0


def test_track_without_event_name_names_event(write_client):
    error = error_of(send(write_client, {"type": "track", "anonymous_id": "a1"}), 400)

    assert "event" in error["details"]
    assert error["message"].startswith("event")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("type", "purchase"),
        ("user_id", ["not", "a", "string"]),
        ("anonymous_id", {"id": 1}),
        ("event", 42),
        ("message_id", ""),
        ("context", "mobile"),
        ("traits", [1, 2]),
    ],
)
def test_wrong_type_names_the_field(write_client, field, value):
    # Given an event whose field has the wrong type
    response = send(write_client, {**track(), field: value})

    # Then the error is reported under that field
    error = error_of(response, 400)
    assert field in error["details"], error


def test_unknown_camel_case_field_hints_the_native_name(write_client):
    # Given a payload written for Segment's camelCase API
    response = send(write_client, {"type": "track", "event": "x", "userId": "u1"})

    # Then the error names the field and suggests the native one
    error = error_of(response, 400)
    assert "userId" in error["details"]
    assert "did you mean user_id" in " ".join(error["details"]["userId"])


def test_properties_must_be_an_object(write_client):
    error = error_of(send(write_client, track(properties=["a", "b"])), 400)

    assert "properties" in error["details"]


@pytest.mark.parametrize("bad", ["yesterday", "2024-13-45T00:00:00Z", "12:00"])
def test_bad_timestamp_names_timestamp(write_client, bad):
    error = error_of(send(write_client, track(timestamp=bad)), 400)

    assert "timestamp" in error["details"]


def test_event_that_is_not_an_object_is_400(write_client):
    error = error_of(send(write_client, ["not", "an", "event"]), 400)

    assert error["details"]


# --- batches --------------------------------------------------------------------------


def test_mixed_batch_stores_valid_events_and_lists_rejected_by_index(write_client):
    # Given a batch of three events where the middle one is invalid
    batch = [
        track(message_id="m1"),
        {"type": "track", "anonymous_id": "a1"},  # no event name
        track(message_id="m3", event="add_to_cart"),
    ]

    # When it is sent
    response = send(write_client, {"batch": batch})

    # Then the valid ones are stored and the bad one is named by index and field
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 0
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["index"] == 1
    assert "event" in body["rejected"][0]["errors"]
    assert set(Event.objects.values_list("message_id", flat=True)) == {"m1", "m3"}


def test_batch_with_no_valid_event_is_400_with_details(write_client):
    batch = [{"type": "track", "anonymous_id": "a1"}, {"type": "nope", "anonymous_id": "a1"}]

    error = error_of(send(write_client, {"batch": batch}), 400)

    assert [r["index"] for r in error["details"]["rejected"]] == [0, 1]
    assert Event.objects.count() == 0


def test_malformed_json_is_400_malformed_json(write_client):
    error = error_of(send_raw(write_client, b'{"type": "track", '), 400, "malformed_json")

    assert error["message"]


def test_empty_body_is_400(write_client):
    response = send_raw(write_client, b"")

    assert response.status_code == 400
    assert response.json()["error"]["code"] in ("malformed_json", "invalid")


def test_body_over_500_kb_is_413(write_client):
    # Given a batch whose body is larger than 500 KB
    big = "x" * 2000
    batch = [track(message_id=f"m{i}", properties={"blob": big}) for i in range(300)]
    raw = orjson.dumps({"batch": batch})
    assert len(raw) > 500 * 1024

    # Then it is refused as too large and nothing is stored
    error_of(send_raw(write_client, raw), 413, "payload_too_large")
    assert Event.objects.count() == 0


def test_single_event_over_32_kb_is_413(write_client):
    response = send(write_client, track(properties={"blob": "x" * (33 * 1024)}))

    error_of(response, 413, "payload_too_large")
    assert Event.objects.count() == 0


def test_oversized_event_in_batch_is_rejected_by_index(write_client):
    # Given a batch whose second event alone is over 32 KB
    batch = [
        track(message_id="ok1"),
        track(message_id="big", properties={"blob": "x" * (33 * 1024)}),
        track(message_id="ok2"),
    ]

    response = send(write_client, {"batch": batch})

    # Then the others are accepted and the big one is rejected by its index
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 2
    assert [r["index"] for r in body["rejected"]] == [1]
    assert set(Event.objects.values_list("message_id", flat=True)) == {"ok1", "ok2"}


def test_batch_of_501_events_is_413(write_client):
    batch = [{"type": "page", "anonymous_id": "a1"} for _ in range(501)]

    error_of(send(write_client, {"batch": batch}), 413, "payload_too_large")
    assert Event.objects.count() == 0


def test_batch_of_500_events_is_accepted(write_client):
    batch = [
        {"type": "page", "anonymous_id": f"a{i % 7}", "message_id": f"m{i}"} for i in range(500)
    ]

    response = send(write_client, {"batch": batch})

    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 500
    assert Event.objects.count() == 500


@pytest.mark.parametrize("value", ["events", {"0": track()}, 3, None])
def test_batch_not_a_list_is_400(write_client, value):
    error = error_of(send(write_client, {"batch": value}), 400)

    assert "batch" in error["details"]


def test_empty_batch_is_400(write_client):
    error = error_of(send(write_client, {"batch": []}), 400)

    assert "batch" in error["details"]


def test_replayed_batch_adds_no_rows(write_client):
    # Given a batch that was accepted once
    batch = [track(message_id=f"m{i}") for i in range(5)]
    first = send(write_client, {"batch": batch})
    assert first.json() == {"accepted": 5, "duplicates": 0, "rejected": [], "dropped": 0}
    profile_events = Profile.objects.get().event_count

    # When it is sent again (a retry after a timeout)
    second = send(write_client, {"batch": batch})

    # Then everything is a duplicate and no row or count is added
    assert second.status_code == 202, second.content
    assert second.json() == {"accepted": 0, "duplicates": 5, "rejected": [], "dropped": 0}
    assert Event.objects.count() == 5
    assert Profile.objects.get().event_count == profile_events == 5


def test_same_message_id_twice_in_one_batch_counts_one_duplicate(write_client):
    batch = [track(message_id="same"), track(message_id="same"), track(message_id="other")]

    response = send(write_client, {"batch": batch})

    assert response.json() == {"accepted": 2, "duplicates": 1, "rejected": [], "dropped": 0}
    assert Event.objects.count() == 2


def test_same_message_id_from_two_sources_are_two_events(write_client, verified_source):
    # message_id is idempotent per source, not globally
    send(write_client, track(message_id="shared"))
    other = send(keyed(verified_source.write_key), track(message_id="shared"))

    assert other.json()["accepted"] == 1
    assert Event.objects.filter(message_id="shared").count() == 2


def test_text_plain_body_from_send_beacon_is_accepted(write_client):
    # Given navigator.sendBeacon, which sends JSON as text/plain
    raw = orjson.dumps(track(message_id="beacon"))

    response = send_raw(write_client, raw, content_type="text/plain;charset=UTF-8")

    assert response.status_code == 202, response.content
    assert Event.objects.filter(message_id="beacon").exists()


def test_stored_event_keeps_what_was_sent(write_client):
    send(
        write_client,
        track(
            message_id="m1",
            event="add_to_cart",
            user_id="u1",
            properties={"sku": "S1", "price": 9.5},
            context={"page": {"path": "/p/1"}},
        ),
    )

    event = Event.objects.get()
    assert (event.type, event.event, event.user_id, event.anonymous_id) == (
        "track",
        "add_to_cart",
        "u1",
        "a1",
    )
    assert event.properties == {"sku": "S1", "price": 9.5}
    assert event.context == {"page": {"path": "/p/1"}}


# --- identity verification ------------------------------------------------------------


@pytest.fixture
def verified_write(verified_source: SourceKeys) -> APIClient:
    return keyed(verified_source.write_key)


def identify(**fields: Any) -> dict[str, Any]:
    return {"type": "identify", "user_id": "u1", **fields}


def test_verified_identify_with_correct_hash_links_user(verified_source, verified_write):
    # Given a storefront server that signed the user id
    signed = user_hash(verified_source.source.identity_secret, "u1")

    # When the browser identifies with it
    response = send(verified_write, identify(anonymous_id="a1", user_hash=signed))

    # Then the user id is linked to the visitor's profile
    assert response.status_code == 202, response.content
    identity = Identity.objects.get(kind=IdentityKind.USER_ID, value="u1")
    assert Identity.objects.get(kind=IdentityKind.ANONYMOUS_ID, value="a1").profile_id == (
        identity.profile_id
    )


def test_verified_identify_with_wrong_hash_is_400_naming_user_hash(verified_write):
    error = error_of(send(verified_write, identify(anonymous_id="a1", user_hash="0" * 64)), 400)

    assert "user_hash" in error["details"]
    assert Event.objects.count() == 0
    assert not Identity.objects.filter(kind=IdentityKind.USER_ID).exists()


@pytest.mark.parametrize(
    "bad_hash", ["é" * 64, "not hex", ""], ids=["non_ascii", "not_hex", "empty"]
)
def test_verified_identify_with_garbage_hash_is_400_naming_user_hash(verified_write, bad_hash):
    # Given a user_hash that is not a hex digest at all (a buggy or hostile client)
    response = send(verified_write, identify(anonymous_id="a1", user_hash=bad_hash))

    # Then it is refused naming user_hash, never a 5xx
    error = error_of(response, 400)
    assert "user_hash" in error["details"]
    assert not Identity.objects.filter(kind=IdentityKind.USER_ID).exists()


def test_unverified_claim_with_anonymous_id_is_stored_but_never_linked(verified_write):
    # Given a browser that claims a user id without a signature
    response = send(verified_write, identify(anonymous_id="a1", traits={"plan": "pro"}))

    # Then the event is kept …
    assert response.status_code == 202, response.content
    event = Event.objects.get()
    assert event.user_id == "u1"
    # … but the user id is not an identity, only an unverified trait
    assert not Identity.objects.filter(kind=IdentityKind.USER_ID, value="u1").exists()
    profile = Profile.objects.get(
        identities__kind=IdentityKind.ANONYMOUS_ID, identities__value="a1"
    )
    assert profile.traits["unverified_user_id"] == "u1"
    assert profile.traits["plan"] == "pro"


def test_unverified_claim_cannot_reach_another_users_profile(verified_source, verified_write):
    # Given a user u1 known from the server side
    send(keyed(verified_source.secret_key), identify(anonymous_id="a-real", traits={"vip": True}))
    real = Profile.objects.get(identities__value="u1")

    # When an attacker's browser claims u1 without a signature
    send(verified_write, identify(anonymous_id="a-attacker", traits={"vip": False}))

    # Then u1's profile is untouched and the attacker gets a profile of their own
    real.refresh_from_db()
    assert real.traits == {"vip": True}
    attacker = Profile.objects.get(identities__value="a-attacker")
    assert attacker.pk != real.pk
    assert Profile.objects.filter(merged_into__isnull=False).count() == 0


def test_unverified_track_without_anonymous_id_is_400_naming_user_hash(verified_write):
    error = error_of(send(verified_write, {"type": "track", "event": "x", "user_id": "u1"}), 400)

    assert "user_hash" in error["details"]
    assert Event.objects.count() == 0


def test_secret_key_needs_no_user_hash(verified_source):
    response = send(keyed(verified_source.secret_key), identify(anonymous_id="a1"))

    assert response.status_code == 202, response.content
    assert Identity.objects.filter(kind=IdentityKind.USER_ID, value="u1").exists()


# --- timestamps -----------------------------------------------------------------------


def test_future_timestamp_is_clamped_to_received_at(write_client):
    # Given an event stamped one day ahead (a wrong client clock)
    sent_ts = datetime.now(UTC) + timedelta(days=1)

    before = datetime.now(UTC)
    send(write_client, track(timestamp=iso(sent_ts)))
    after = datetime.now(UTC)

    # Then it is stored at arrival time and the client's value is kept
    event = Event.objects.get()
    assert before - timedelta(seconds=1) <= event.timestamp <= after + timedelta(seconds=1)
    assert abs(event.timestamp - event.received_at) < timedelta(seconds=1)
    assert event.original_timestamp is not None
    assert abs(event.original_timestamp - sent_ts) < timedelta(milliseconds=1)


def test_sent_at_corrects_client_clock_skew(write_client):
    # Given a client whose clock is one hour behind: it stamps and sends at its "now" T
    client_now = datetime.now(UTC) - timedelta(hours=1)

    send(write_client, track(timestamp=iso(client_now), sent_at=iso(client_now)))

    # Then the stored timestamp is shifted by the skew: T + 1h, i.e. the server's now
    event = Event.objects.get()
    expected = client_now + timedelta(hours=1)
    assert abs(event.timestamp - expected) < timedelta(seconds=5)
    assert event.original_timestamp is not None
    assert abs(event.original_timestamp - client_now) < timedelta(milliseconds=1)


def test_past_timestamp_without_sent_at_is_kept(write_client):
    ts = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

    send(write_client, track(timestamp=iso(ts)))

    assert Event.objects.get().timestamp == ts


# --- bots -----------------------------------------------------------------------------


def test_bot_event_is_stored_flagged_and_not_counted(write_client):
    # Given a crawler hitting the storefront
    response = send(write_client, track(context={"user_agent": "Googlebot/2.1"}))

    # Then the event is kept as a bot event and does not count for the profile
    assert response.status_code == 202, response.content
    assert Event.objects.get().is_bot is True
    assert Profile.objects.get().event_count == 0


def test_human_user_agent_is_counted(write_client):
    ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"

    send(write_client, track(context={"user_agent": ua}))

    assert Event.objects.get().is_bot is False
    assert Profile.objects.get().event_count == 1


# --- event schemas --------------------------------------------------------------------

PURCHASE_SCHEMA = {
    "type": "object",
    "required": ["revenue"],
    "properties": {"revenue": {"type": "number"}},
}


def test_strict_schema_rejects_purchase_without_revenue(write_client):
    # Given a strict schema for "purchase"
    EventSchema.objects.create(event="purchase", schema=PURCHASE_SCHEMA, mode="strict")
    schemas_invalidate()

    # When a purchase without revenue is sent
    response = send(write_client, track(event="purchase", properties={"sku": "S1"}))

    # Then it is rejected, and the error points at properties and names revenue
    error = error_of(response, 400)
    assert "properties" in error["details"]
    assert "revenue" in " ".join(error["details"]["properties"])
    assert Event.objects.count() == 0


def test_strict_schema_error_path_names_the_bad_property(write_client):
    EventSchema.objects.create(event="purchase", schema=PURCHASE_SCHEMA, mode="strict")
    schemas_invalidate()

    error = error_of(send(write_client, track(event="purchase", properties={"revenue": "a"})), 400)

    assert "properties.revenue" in error["details"]


def test_strict_schema_accepts_valid_purchase(write_client):
    EventSchema.objects.create(event="purchase", schema=PURCHASE_SCHEMA, mode="strict")
    schemas_invalidate()

    response = send(write_client, track(event="purchase", properties={"revenue": 12.5}))

    assert response.status_code == 202, response.content
    assert Event.objects.get().schema_warnings is None


def test_warn_schema_accepts_and_records_warnings(write_client):
    EventSchema.objects.create(event="purchase", schema=PURCHASE_SCHEMA, mode="warn")
    schemas_invalidate()

    response = send(write_client, track(event="purchase", properties={"sku": "S1"}))

    assert response.status_code == 202, response.content
    warnings = Event.objects.get().schema_warnings
    assert warnings
    assert "revenue" in " ".join(warnings)


def test_disabled_schema_is_not_applied(write_client):
    EventSchema.objects.create(
        event="purchase", schema=PURCHASE_SCHEMA, mode="strict", enabled=False
    )
    schemas_invalidate()

    response = send(write_client, track(event="purchase", properties={}))

    assert response.status_code == 202, response.content


# --- odd but well-formed input never causes a 5xx ----------------------------------------

ODD_EVENTS = {
    "nul_in_property": track(properties={"q": "a\u0000b"}),
    "nul_in_property_key": track(properties={"a\u0000b": 1}),
    "nul_in_event_name": track(event="add\u0000to_cart"),
    "nul_in_anonymous_id": track(anonymous_id="a\u00001"),
    "year_1": track(timestamp="0001-01-01T00:00:00Z"),
    "year_9999": track(timestamp="9999-12-31T23:59:59Z"),
    "skew_overflow_past": track(timestamp="0001-01-01T00:00:00Z", sent_at="9999-12-31T00:00:00Z"),
    "skew_overflow_future": track(timestamp="9999-12-31T00:00:00Z", sent_at="0001-01-01T00:00:00Z"),
    "offset_timestamp": track(timestamp="2024-01-01T00:00:00+14:00"),
    "huge_revenue": track(event="purchase", properties={"revenue": 1e300}),
    "revenue_over_column_size": track(event="purchase", properties={"revenue": 1e16}),
    "negative_revenue": track(event="purchase", properties={"revenue": -5}),
    "revenue_as_text": track(event="purchase", properties={"revenue": "12.50"}),
    "revenue_nan_text": track(event="purchase", properties={"revenue": "NaN"}),
    "revenue_inf_text": track(event="purchase", properties={"revenue": "Infinity"}),
    "long_user_id": track(user_id="u" * 256),
    "numeric_user_id": track(user_id=12345),
    "bool_user_id": track(user_id=True),
    "emoji": track(event="👍", properties={"名前": "値"}),
    "identify_email_not_string": {"type": "identify", "user_id": "u1", "traits": {"email": 5}},
    "alias_unknown_previous": {"type": "alias", "user_id": "u1", "previous_id": "nobody"},
}


@pytest.mark.parametrize("payload", ODD_EVENTS.values(), ids=ODD_EVENTS.keys())
def test_odd_input_is_accepted_or_refused_never_5xx(secret_client, payload):
    # Given well-formed JSON with odd content (what a fuzzer or a buggy SDK sends)
    response = secret_client.post(URL, payload, format="json")

    # Then the answer is 202 or a 4xx with the error shape, never a 5xx
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        error_of(response, 400)


def test_deeply_nested_json_is_refused_cleanly(write_client):
    raw = b'{"type": "track", "event": "x", "anonymous_id": "a", "properties": ' + (
        b'{"a": ' * 2000 + b"1" + b"}" * 2000 + b"}"
    )

    response = send_raw(write_client, raw)

    assert 400 <= response.status_code < 500


def test_get_on_events_is_405_with_error_shape(write_client):
    response = write_client.get(URL)

    error_of(response, 405, "method_not_allowed")
