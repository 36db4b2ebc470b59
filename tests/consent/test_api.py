"""POST/GET /api/v1/consent (DESIGN.md §4) and what consent changes downstream: whether
events are stored, and what the selectors tell personalization and marketing."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from consent import selectors
from consent.models import ConsentRecord
from profiles.keys import user_hash
from profiles.models import Event, Identity, IdentityKind, Profile
from profiles.services import SourceKeys
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

URL = "/api/v1/consent"
PURPOSES = {"analytics", "personalization", "marketing"}


def keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def give(client: APIClient, body: dict[str, Any], **extra: Any) -> Any:
    response = client.post(URL, body, format="json", **extra)
    assert response.status_code < 500, response.content
    return response


def consent_body(**fields: Any) -> dict[str, Any]:
    return {
        "anonymous_id": "a-consent",
        "purposes": {"analytics": False},
        "policy_version": "v1",
        **fields,
    }


def error_of(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    return body["error"]


def track(anonymous_id: str = "a-consent", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "page_scrolled", "anonymous_id": anonymous_id, **fields}


def dropped_for_consent() -> float:
    value = REGISTRY.get_sample_value("cdp_events_dropped_total", {"reason": "consent"})
    return value or 0.0


def profile_of(kind: str, value: str) -> Profile:
    return Identity.objects.get(kind=kind, value=value).profile


# --- recording and reading -------------------------------------------------------------


def test_post_records_and_answers_the_state_per_purpose(write_client):
    # Given a visitor on the cookie banner
    # When they withdraw analytics and grant marketing under policy v3
    response = give(
        write_client,
        consent_body(purposes={"analytics": False, "marketing": True}, policy_version="v3"),
    )

    # Then the answer is 201 with every purpose's current state
    assert response.status_code == 201, response.content
    body = response.json()
    profile = profile_of(IdentityKind.ANONYMOUS_ID, "a-consent")
    assert body["profile_id"] == str(profile.pk)
    assert set(body["purposes"]) == PURPOSES
    analytics = body["purposes"]["analytics"]
    assert analytics["granted"] is False
    assert analytics["basis"] == "recorded"
    assert analytics["policy_version"] == "v3"
    assert analytics["recorded_at"]
    assert analytics["source"] == "banner"
    assert body["purposes"]["marketing"]["granted"] is True
    assert body["purposes"]["marketing"]["basis"] == "recorded"
    # … a purpose they said nothing about keeps its default
    assert body["purposes"]["personalization"] == {
        "granted": True,
        "basis": "default",
        "recorded_at": None,
        "policy_version": None,
        "source": None,
        "expires_at": None,
    }
    # … and one record per purpose named is stored
    assert ConsentRecord.objects.filter(profile=profile).count() == 2


def test_get_answers_the_recorded_state(write_client):
    # Given a visitor who granted marketing
    give(write_client, consent_body(purposes={"marketing": True}))

    # When the storefront reads their consent
    response = write_client.get(URL, {"anonymous_id": "a-consent"})

    # Then it sees the grant with its proof
    assert response.status_code == 200, response.content
    marketing = response.json()["purposes"]["marketing"]
    assert marketing["granted"] is True
    assert marketing["basis"] == "recorded"
    assert marketing["policy_version"] == "v1"
    assert marketing["recorded_at"]


def test_get_for_an_unknown_visitor_answers_defaults_and_creates_nothing(write_client):
    # Given a visitor the CDP has never seen
    # When the storefront reads their consent
    response = write_client.get(URL, {"anonymous_id": "a-never-seen"})

    # Then the defaults are answered: analytics and personalization opt-out, marketing opt-in
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["profile_id"] is None
    assert {code: s["granted"] for code, s in body["purposes"].items()} == {
        "analytics": True,
        "personalization": True,
        "marketing": False,
    }
    assert {s["basis"] for s in body["purposes"].values()} == {"default"}
    # … and reading did not create a profile or an identity
    assert Profile.objects.count() == 0
    assert Identity.objects.count() == 0


def test_history_is_append_only_and_the_newest_record_decides(write_client):
    # Given a visitor who withdrew analytics under v1
    give(write_client, consent_body(purposes={"analytics": False}, policy_version="v1"))

    # When they grant it again under v2
    response = give(write_client, consent_body(purposes={"analytics": True}, policy_version="v2"))

    # Then both records are kept and the newest is the state
    assert response.status_code == 201, response.content
    records = ConsentRecord.objects.filter(purpose__code="analytics").order_by("recorded_at", "id")
    assert [(r.granted, r.policy_version) for r in records] == [(False, "v1"), (True, "v2")]
    analytics = response.json()["purposes"]["analytics"]
    assert analytics["granted"] is True
    assert analytics["policy_version"] == "v2"


def test_a_stored_record_cannot_be_edited(write_client):
    # Given a stored consent record
    give(write_client, consent_body())
    record = ConsentRecord.objects.get()

    # When someone tries to change it / Then it is refused
    record.granted = True
    with pytest.raises(ValueError, match="append-only"):
        record.save()
    record.refresh_from_db()
    assert record.granted is False


def test_evidence_holds_a_hashed_ip_and_no_raw_ip(write_client):
    # Given a visitor whose browser comes from a known IP
    ip = "203.0.113.77"

    # When they record consent
    response = give(write_client, consent_body(), REMOTE_ADDR=ip, HTTP_USER_AGENT="Firefox/126")

    # Then the proof holds a hash of the IP, never the IP itself
    assert response.status_code == 201, response.content
    evidence = ConsentRecord.objects.get().evidence
    assert evidence["ip_hash"]
    assert ip not in orjson.dumps(evidence).decode()
    assert evidence["user_agent"] == "Firefox/126"


@pytest.mark.parametrize("consent_source", ["banner", "api", "import"])
def test_source_is_stored(write_client, consent_source):
    response = give(write_client, consent_body(source=consent_source))

    assert response.status_code == 201, response.content
    assert ConsentRecord.objects.get().source == consent_source


# --- bad input --------------------------------------------------------------------------


def test_unknown_purpose_is_400_naming_the_known_purposes(write_client):
    # When a visitor sends a purpose the deployment does not have
    response = give(write_client, consent_body(purposes={"telepathy": True}))

    # Then it is refused, naming the purpose and the ones that exist, and nothing is stored
    error = error_of(response)
    assert "purposes" in error["details"]
    text = str(error["details"])
    assert "telepathy" in text
    for code in PURPOSES:
        assert code in text
    assert ConsentRecord.objects.count() == 0


def test_missing_policy_version_is_400(write_client):
    body = consent_body()
    del body["policy_version"]

    error = error_of(give(write_client, body))

    assert "policy_version" in error["details"]
    assert ConsentRecord.objects.count() == 0


def test_missing_both_ids_is_400(write_client):
    body = consent_body()
    del body["anonymous_id"]

    error = error_of(give(write_client, body))

    assert "user_id" in error["details"]
    assert "anonymous_id" in str(error["details"])
    assert Profile.objects.count() == 0


def test_get_without_ids_is_400(write_client):
    error = error_of(write_client.get(URL))

    assert "user_id" in error["details"]


@pytest.mark.parametrize("value", ["maybe", None, {"yes": True}, 1, "true"])
def test_a_value_that_is_not_a_boolean_is_400(write_client, value):
    # Consent must be unambiguous: only JSON true/false count
    error = error_of(give(write_client, consent_body(purposes={"analytics": value})))

    assert "purposes" in error["details"]
    assert ConsentRecord.objects.count() == 0


@pytest.mark.parametrize("purposes", [{}, [], "analytics"])
def test_purposes_must_be_a_non_empty_object(write_client, purposes):
    error = error_of(give(write_client, consent_body(purposes=purposes)))

    assert "purposes" in error["details"]


@pytest.mark.parametrize("consent_source", ["admin", "event", "cookie"])
def test_source_must_be_banner_api_or_import(write_client, consent_source):
    # "admin" and "event" are recorded by the CDP itself, never claimed by a caller
    error = error_of(give(write_client, consent_body(source=consent_source)))

    assert "source" in error["details"]
    assert ConsentRecord.objects.count() == 0


# --- identity verification -------------------------------------------------------------


def test_verified_source_refuses_a_bare_user_id_naming_user_hash(verified_source: SourceKeys):
    # Given a source that verifies user ids
    client = keyed(verified_source.write_key)

    # When a browser records consent for a user_id without its user_hash
    response = give(
        client, {"user_id": "u-victim", "purposes": {"marketing": True}, "policy_version": "v1"}
    )

    # Then it is refused naming user_hash, and nothing is stored for that person
    error = error_of(response)
    assert "user_hash" in error["details"]
    assert ConsentRecord.objects.count() == 0
    assert not Identity.objects.filter(value="u-victim").exists()


def test_verified_source_refuses_a_wrong_user_hash(verified_source: SourceKeys):
    client = keyed(verified_source.write_key)
    wrong = user_hash(verified_source.source.identity_secret, "someone-else")

    response = give(
        client,
        {
            "user_id": "u1",
            "user_hash": wrong,
            "purposes": {"marketing": True},
            "policy_version": "v1",
        },
    )

    assert "user_hash" in error_of(response)["details"]
    assert ConsentRecord.objects.count() == 0


def test_verified_source_accepts_a_correct_user_hash(verified_source: SourceKeys):
    # Given the storefront's server signed the user id
    client = keyed(verified_source.write_key)
    signed = user_hash(verified_source.source.identity_secret, "u-signed")

    # When the browser records consent with it
    response = give(
        client,
        {
            "user_id": "u-signed",
            "user_hash": signed,
            "purposes": {"marketing": True},
            "policy_version": "v1",
        },
    )

    # Then it is recorded for that user
    assert response.status_code == 201, response.content
    profile = profile_of(IdentityKind.USER_ID, "u-signed")
    assert response.json()["profile_id"] == str(profile.pk)
    assert ConsentRecord.objects.get().profile_id == profile.pk


def test_verified_source_does_not_let_a_browser_read_someone_elses_consent(
    verified_source: SourceKeys, secret_client
):
    # Given a known user who granted marketing (recorded server-side)
    secret = keyed(verified_source.secret_key)
    give(secret, {"user_id": "u-private", "purposes": {"marketing": True}, "policy_version": "v1"})

    # When a browser asks for that user's consent without the user_hash
    response = keyed(verified_source.write_key).get(URL, {"user_id": "u-private"})

    # Then it is refused naming user_hash
    assert "user_hash" in error_of(response)["details"]


def test_verified_source_with_anonymous_id_records_for_the_anonymous_visitor(
    verified_source: SourceKeys,
):
    # Given a browser that names an unverified user_id alongside its anonymous id
    client = keyed(verified_source.write_key)

    # When it records consent
    response = give(
        client,
        {
            "user_id": "u-claimed",
            "anonymous_id": "a-browser",
            "purposes": {"marketing": True},
            "policy_version": "v1",
        },
    )

    # Then it is recorded for the anonymous visitor, not for the claimed user
    assert response.status_code == 201, response.content
    anon = profile_of(IdentityKind.ANONYMOUS_ID, "a-browser")
    assert ConsentRecord.objects.get().profile_id == anon.pk
    assert not Identity.objects.filter(kind=IdentityKind.USER_ID, value="u-claimed").exists()


# --- enforcement at ingestion -----------------------------------------------------------


def test_by_default_events_are_stored(write_client):
    # Given a new visitor who chose nothing (analytics is opt-out)
    # When they send an event
    response = post_events(write_client, track())

    # Then it is stored
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    assert Event.objects.count() == 1


def test_after_withdrawing_analytics_the_next_event_is_dropped_and_counted(write_client):
    # Given a visitor whose events are stored
    assert post_events(write_client, track()).json()["accepted"] == 1
    before = dropped_for_consent()

    # When they withdraw analytics
    give(write_client, consent_body(purposes={"analytics": False}))
    response = post_events(write_client, track(properties={"n": 2}))

    # Then the very next event is not stored, only counted
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["accepted"] == 0
    assert body["dropped"] == 1
    assert body["rejected"] == []
    assert Event.objects.count() == 1
    assert dropped_for_consent() == before + 1


def test_granting_analytics_again_stores_events_again(write_client):
    # Given a visitor who withdrew analytics
    give(write_client, consent_body(purposes={"analytics": False}))
    assert post_events(write_client, track()).json()["accepted"] == 0

    # When they grant it again
    give(write_client, consent_body(purposes={"analytics": True}))
    response = post_events(write_client, track(properties={"n": 2}))

    # Then their next event is stored
    assert response.json()["accepted"] == 1
    assert Event.objects.count() == 1


def test_withdrawal_for_a_user_id_drops_events_of_that_user(write_client):
    # Given a logged-in user who withdrew analytics
    give(
        write_client,
        {"user_id": "u-quiet", "purposes": {"analytics": False}, "policy_version": "v1"},
    )

    # When the storefront sends their event
    response = post_events(write_client, {"type": "track", "event": "x", "user_id": "u-quiet"})

    # Then it is not stored
    assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": [], "dropped": 1}
    assert Event.objects.count() == 0


def test_an_event_that_carries_consent_is_stored_and_recorded(write_client):
    # Given a visitor who withdrew analytics
    give(write_client, consent_body(purposes={"analytics": False}))

    # When their banner's event carries a new grant
    carried = {"purposes": {"analytics": True}, "policy_version": "v2"}
    response = post_events(write_client, track(event="consent_given", context={"consent": carried}))

    # Then the event is stored (it is the proof) …
    assert response.json()["accepted"] == 1, response.content
    assert Event.objects.filter(event="consent_given").count() == 1
    # … the grant is recorded with source "event" …
    profile = profile_of(IdentityKind.ANONYMOUS_ID, "a-consent")
    record = ConsentRecord.objects.get(profile=profile, source="event")
    assert record.purpose.code == "analytics"
    assert record.granted is True
    assert record.policy_version == "v2"
    # … and their following events are stored too
    assert post_events(write_client, track(event="later")).json()["accepted"] == 1


def test_consent_carried_for_another_purpose_is_kept_when_analytics_is_withdrawn(
    write_client,
):
    # Given a visitor who withdrew analytics
    give(write_client, consent_body(purposes={"analytics": False}))

    # When their banner's event carries a marketing grant (and says nothing on analytics)
    carried = {"purposes": {"marketing": True}, "policy_version": "v2"}
    response = post_events(write_client, track(event="consent_given", context={"consent": carried}))

    # Then the grant is not lost: events that carry consent are kept as the proof
    assert response.status_code == 202, response.content
    assert response.json()["accepted"] == 1
    marketing = write_client.get(URL, {"anonymous_id": "a-consent"}).json()["purposes"]["marketing"]
    assert marketing["granted"] is True
    assert marketing["source"] == "event"


def test_a_withdrawal_carried_in_a_batch_applies_to_the_rest_of_the_batch(write_client):
    # Given a new visitor whose batch starts with the banner's "no analytics" event
    carried = {"purposes": {"analytics": False}, "policy_version": "v1"}
    batch = [
        track(event="consent_changed", context={"consent": carried}),
        track(event="page_scrolled"),
        track(event="product_viewed"),
    ]

    # When the batch arrives
    response = post_events(write_client, {"batch": batch})

    # Then the proof is stored, the later events are not
    assert response.json()["accepted"] == 1
    assert response.json()["dropped"] == 2
    assert list(Event.objects.values_list("event", flat=True)) == ["consent_changed"]
    analytics = write_client.get(URL, {"anonymous_id": "a-consent"}).json()["purposes"]["analytics"]
    assert analytics["granted"] is False
    assert analytics["source"] == "event"


def test_invalid_carried_consent_rejects_the_event_naming_the_purpose(write_client):
    # When an event carries consent for a purpose that does not exist
    carried = {"purposes": {"telepathy": True}, "policy_version": "v1"}
    response = post_events(write_client, track(context={"consent": carried}))

    # Then the event is rejected naming context.consent.purposes.<code>
    error = error_of(response)
    assert "context.consent.purposes.telepathy" in error["details"]
    assert Event.objects.count() == 0
    assert ConsentRecord.objects.count() == 0


def test_strict_opt_in_drops_events_until_analytics_is_granted(write_client, settings):
    # Given a deployment where every purpose is opt-in
    settings.CDP = {**settings.CDP, "CONSENT_ALL_OPT_IN": True}

    # When a new visitor sends an event
    first = post_events(write_client, track(anonymous_id="a-strict"))

    # Then it is not stored
    assert first.status_code == 202, first.content
    assert first.json()["accepted"] == 0
    assert first.json()["dropped"] == 1
    assert Event.objects.count() == 0
    state = write_client.get(URL, {"anonymous_id": "a-strict"}).json()["purposes"]
    assert {code: s["granted"] for code, s in state.items()} == dict.fromkeys(PURPOSES, False)

    # When they grant analytics
    give(write_client, consent_body(anonymous_id="a-strict", purposes={"analytics": True}))
    second = post_events(write_client, track(anonymous_id="a-strict"))

    # Then their events are stored
    assert second.json()["accepted"] == 1
    assert Event.objects.count() == 1


def test_consent_of_an_anonymous_profile_follows_it_into_the_identified_one(write_client):
    # Given a known customer …
    post_events(write_client, {"type": "identify", "user_id": "u-merge", "traits": {"plan": "pro"}})
    customer = profile_of(IdentityKind.USER_ID, "u-merge")
    # … who, before logging in on a new device, granted marketing anonymously
    give(write_client, consent_body(anonymous_id="a-device", purposes={"marketing": True}))
    assert profile_of(IdentityKind.ANONYMOUS_ID, "a-device").pk != customer.pk

    # When they log in (identify with both ids)
    response = post_events(
        write_client, {"type": "identify", "user_id": "u-merge", "anonymous_id": "a-device"}
    )

    # Then the two profiles are one and the grant belongs to it
    assert response.status_code == 202, response.content
    live = profile_of(IdentityKind.USER_ID, "u-merge")
    assert profile_of(IdentityKind.ANONYMOUS_ID, "a-device").pk == live.pk
    assert list(ConsentRecord.objects.values_list("profile_id", flat=True)) == [live.pk]
    marketing = write_client.get(URL, {"user_id": "u-merge"}).json()["purposes"]["marketing"]
    assert marketing["granted"] is True
    assert marketing["basis"] == "recorded"
    assert selectors.consent_allows(profile_id=live.pk, purpose="marketing") is True


# --- selectors: personalization and marketing -------------------------------------------


def test_defaults_personalization_is_allowed_marketing_is_not(db):
    # Given someone with no history
    # Then personalization (opt-out) is allowed and marketing (opt-in) is not
    assert selectors.consent_allows(profile_id=None, purpose="personalization") is True
    assert selectors.consent_allows(profile_id=None, purpose="marketing") is False
    assert selectors.gate_default(gate="personalization") is True
    assert selectors.gate_default(gate="activation") is False


def test_unknown_purpose_is_never_allowed(db):
    assert selectors.consent_allows(profile_id=None, purpose="telepathy") is False


def test_gates_follow_the_visitors_choices(write_client):
    # Given a visitor with a profile and no choices yet
    post_events(write_client, track())
    profile = profile_of(IdentityKind.ANONYMOUS_ID, "a-consent")
    pid = profile.pk
    assert selectors.gate_allowed(gate="personalization", profile_ids={pid}) == {pid: True}
    assert selectors.gate_allowed(gate="activation", profile_ids={pid}) == {pid: False}

    # When they grant marketing and withdraw personalization
    give(write_client, consent_body(purposes={"marketing": True, "personalization": False}))

    # Then the very next reads say so
    assert selectors.consent_allows(profile_id=pid, purpose="marketing") is True
    assert selectors.consent_allows(profile_id=pid, purpose="personalization") is False
    assert selectors.gate_allowed(gate="activation", profile_ids={pid}) == {pid: True}
    assert selectors.gate_allowed(gate="personalization", profile_ids={pid}) == {pid: False}


def test_strict_opt_in_makes_personalization_opt_in_too(write_client, settings):
    settings.CDP = {**settings.CDP, "CONSENT_ALL_OPT_IN": True}

    assert selectors.consent_allows(profile_id=None, purpose="personalization") is False
    assert selectors.gate_default(gate="personalization") is False

    give(write_client, consent_body(purposes={"personalization": True}))
    pid = profile_of(IdentityKind.ANONYMOUS_ID, "a-consent").pk
    assert selectors.consent_allows(profile_id=pid, purpose="personalization") is True
