"""Who may call what: the auth matrix of every routed endpoint, and CORS for browsers.

Adding an endpoint is one line in ENDPOINTS.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from consent import services as consent_services
from consent.models import DataSubjectRequest, RequestStatus, RequestType, SubjectKind
from experiments.models import Experiment
from experiments.services import experiment_save
from profiles.models import Identity, IdentityKind, Profile
from profiles.selectors import source_key_cache_clear
from profiles.services import SourceKeys
from rules import services as rules_services
from rules.models import Rule, Slot
from segments.models import Membership, Segment

PUBLIC, WRITE, SECRET = "public", "write", "secret"
KNOWN_USER_ID = "u-matrix"
KNOWN_REQUEST_ID = uuid.UUID("00000000-0000-4000-8000-00000000a11c")
KNOWN_SEGMENT = "matrix-segment"
SEGMENT_CONDITION = {"trait": "plan", "op": "eq", "value": "pro"}
KNOWN_SLOT = "matrix_slot"
KNOWN_RULE = "matrix-rule"
KNOWN_EXPERIMENT = "matrix-experiment"
EXPERIMENT_BODY = {
    "key": "matrix-new-experiment",
    "name": "New",
    "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    "goals": [{"event": "purchase", "kind": "conversion"}],
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    # may name {profile_id} and {user_id}: a profile the test creates, {request_id}:
    # a completed access request about it, with its export bundle, and {segment}: a
    # segment it is a member of
    path: str
    access: str  # PUBLIC (no key needed), WRITE (write key or better), SECRET
    ok: int = 200
    body: dict[str, Any] | None = None
    # Public endpoints that still refuse a wrong key (DRF authenticates before AllowAny).
    # Health probes ignore keys entirely: a stale header must never fail a load balancer.
    refuses_wrong_key: bool = True

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/events",
        WRITE,
        ok=202,
        body={"type": "track", "event": "matrix_probe", "anonymous_id": "a-matrix"},
    ),
    Endpoint("GET", "/api/v1/profiles?user_id={user_id}", SECRET),
    Endpoint("GET", "/api/v1/profiles/{profile_id}", SECRET),
    Endpoint(
        "POST",
        "/api/v1/consent",
        WRITE,
        ok=201,
        body={"anonymous_id": "a-matrix", "purposes": {"analytics": True}, "policy_version": "v1"},
    ),
    Endpoint("GET", "/api/v1/consent?anonymous_id=a-matrix", WRITE),
    Endpoint(
        "POST",
        "/api/v1/privacy/requests",
        SECRET,
        ok=202,
        body={"type": "access", "user_id": KNOWN_USER_ID},
    ),
    Endpoint("GET", "/api/v1/privacy/requests/{request_id}", SECRET),
    Endpoint("GET", "/api/v1/privacy/requests/{request_id}/export", SECRET),
    Endpoint("GET", "/api/v1/segments", SECRET),
    Endpoint(
        "POST",
        "/api/v1/segments",
        SECRET,
        ok=201,
        body={"slug": "matrix-new", "name": "New", "condition": SEGMENT_CONDITION},
    ),
    Endpoint("GET", "/api/v1/segments/{segment}", SECRET),
    Endpoint(
        "PUT",
        "/api/v1/segments/{segment}",
        SECRET,
        body={"slug": KNOWN_SEGMENT, "name": "Replaced", "condition": SEGMENT_CONDITION},
    ),
    Endpoint("PATCH", "/api/v1/segments/{segment}", SECRET, body={"name": "Renamed"}),
    Endpoint("DELETE", "/api/v1/segments/{segment}", SECRET, ok=204),
    Endpoint("GET", "/api/v1/segments/{segment}/members?limit=10", SECRET),
    Endpoint("POST", "/api/v1/segments/preview", SECRET, body={"condition": SEGMENT_CONDITION}),
    Endpoint(
        "POST",
        "/api/v1/decide",
        WRITE,
        body={"user_id": KNOWN_USER_ID, "slots": [KNOWN_SLOT], "context": {"device": "mobile"}},
    ),
    Endpoint(
        "GET", "/api/v1/recommendations?user_id=" + KNOWN_USER_ID + "&strategy=trending", WRITE
    ),
    Endpoint("GET", "/api/v1/slots", SECRET),
    Endpoint(
        "POST",
        "/api/v1/slots",
        SECRET,
        ok=201,
        body={"key": "matrix_new", "variants": [{"key": "a", "content": {"title": "A"}}]},
    ),
    Endpoint("GET", "/api/v1/slots/{slot}", SECRET),
    Endpoint("PUT", "/api/v1/slots/{slot}", SECRET, body={"key": KNOWN_SLOT, "strategy": "random"}),
    Endpoint("PATCH", "/api/v1/slots/{slot}", SECRET, body={"description": "Hero"}),
    Endpoint("DELETE", "/api/v1/slots/{slot}", SECRET, ok=204),
    Endpoint("GET", "/api/v1/rules", SECRET),
    Endpoint(
        "POST",
        "/api/v1/rules",
        SECRET,
        ok=201,
        body={
            "key": "matrix-new-rule",
            "slot": KNOWN_SLOT,
            "name": "New",
            "condition": {"context": "device", "op": "eq", "value": "mobile"},
            "variant": "promo",
        },
    ),
    Endpoint("GET", "/api/v1/rules/{rule}", SECRET),
    Endpoint(
        "PUT",
        "/api/v1/rules/{rule}",
        SECRET,
        body={
            "key": KNOWN_RULE,
            "slot": KNOWN_SLOT,
            "name": "Replaced",
            "condition": SEGMENT_CONDITION,
            "variant": "promo",
        },
    ),
    Endpoint("PATCH", "/api/v1/rules/{rule}", SECRET, body={"priority": 5}),
    Endpoint("DELETE", "/api/v1/rules/{rule}", SECRET, ok=204),
    Endpoint("GET", "/api/v1/experiments", SECRET),
    Endpoint("POST", "/api/v1/experiments", SECRET, ok=201, body=EXPERIMENT_BODY),
    Endpoint("GET", "/api/v1/experiments/{experiment}", SECRET),
    Endpoint("PATCH", "/api/v1/experiments/{experiment}", SECRET, body={"name": "Renamed"}),
    Endpoint("DELETE", "/api/v1/experiments/{experiment}", SECRET, ok=204),
    Endpoint("POST", "/api/v1/experiments/{experiment}/start", SECRET),
    Endpoint("GET", "/api/v1/experiments/{experiment}/results", SECRET),
    Endpoint(
        "POST", "/api/v1/decide", WRITE, body={"user_id": KNOWN_USER_ID, "flags": ["matrix-flag"]}
    ),
    Endpoint("GET", "/healthz", PUBLIC, refuses_wrong_key=False),
    Endpoint("GET", "/readyz", PUBLIC, refuses_wrong_key=False),
    Endpoint("GET", "/api/schema/?format=json", PUBLIC, refuses_wrong_key=False),
    Endpoint("GET", "/api/docs/", PUBLIC, refuses_wrong_key=False),
]
PROTECTED = [e for e in ENDPOINTS if e.access != PUBLIC]
ids = [str(e) for e in ENDPOINTS]
protected_ids = [str(e) for e in PROTECTED]


@pytest.fixture
def known_profile(db: Any, privacy_export_dir: Any) -> Profile:
    profile = Profile.objects.create()
    Identity.objects.create(kind=IdentityKind.USER_ID, value=KNOWN_USER_ID, profile=profile)
    # … and a verified access request about them, processed: its export bundle exists
    now = timezone.now()
    DataSubjectRequest.objects.create(
        id=KNOWN_REQUEST_ID,
        type=RequestType.ACCESS,
        status=RequestStatus.VERIFIED,
        subject_kind=SubjectKind.USER_ID,
        subject_value=KNOWN_USER_ID,
        subject_hash="matrix",
        received_at=now,
        due_at=now + timedelta(days=30),
        created_by="system",
    )
    consent_services.privacy_request_process(request_id=KNOWN_REQUEST_ID)
    # … and a segment they are a member of
    segment = Segment.objects.create(slug=KNOWN_SEGMENT, name="Matrix", condition=SEGMENT_CONDITION)
    Membership.objects.create(segment=segment, profile=profile, since=now)
    # … and a slot with a rule
    slot = rules_services.slot_save(
        slot=Slot(key=KNOWN_SLOT),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    rules_services.rule_save(
        rule=Rule(
            key=KNOWN_RULE,
            slot=slot,
            name="Matrix",
            condition=SEGMENT_CONDITION,
            variant=slot.variants.get(key="promo"),
        ),
        actor="test",
    )
    # … and a draft experiment on a slot of its own
    experiment_slot = rules_services.slot_save(
        slot=Slot(key="matrix_experiment_slot"),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    experiment_save(
        experiment=Experiment(key=KNOWN_EXPERIMENT, name="Matrix", slot=experiment_slot),
        actor="test",
        variants=[{"key": "base", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    return profile


def call(client: APIClient, ep: Endpoint, profile: Profile, **headers: Any) -> Any:
    path = ep.path.format(
        profile_id=profile.pk,
        user_id=KNOWN_USER_ID,
        request_id=KNOWN_REQUEST_ID,
        segment=KNOWN_SEGMENT,
        slot=KNOWN_SLOT,
        rule=KNOWN_RULE,
        experiment=KNOWN_EXPERIMENT,
    )
    if ep.method == "GET":
        response = client.get(path, **headers)
    else:
        send = getattr(client, ep.method.lower())  # post, put, patch, delete
        response = send(path, ep.body, format="json", **headers)
    if response.streaming:  # a file download: read it (the test client then closes it)
        b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert response.status_code < 500, response.content
    return response


def keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    return body


def assert_allowed(response: Any, ep: Endpoint) -> None:
    assert response.status_code == ep.ok, response.content[:500]


# --- no key ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_no_key_is_401_with_challenge_except_public(ep, anon_client, known_profile):
    # Given a caller with no Authorization header
    # When it calls the endpoint
    response = call(anon_client, ep, known_profile)

    # Then protected endpoints answer 401 with a Bearer challenge and the error shape
    if ep.access == PUBLIC:
        assert_allowed(response, ep)
    else:
        assert_error(response, 401)
        assert response["WWW-Authenticate"].startswith("Bearer")


# --- wrong keys -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("bad_key", ["wk_nope", "sk_nope", "garbage"])
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_wrong_key_is_401_invalid_key(ep, bad_key, source, known_profile):
    # Given a key that no source owns
    client = keyed(bad_key)

    # When it is used
    response = call(client, ep, known_profile)

    # Then it is refused as an invalid key (health probes ignore keys)
    if ep.refuses_wrong_key:
        assert_error(response, 401, "invalid_key")
        assert response["WWW-Authenticate"].startswith("Bearer")
    else:
        assert_allowed(response, ep)


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Basic dXNlcjpwdw=="])
@pytest.mark.parametrize("ep", PROTECTED, ids=protected_ids)
def test_malformed_authorization_header_is_401(ep, header, source, known_profile):
    # Given an Authorization header that is not "Bearer <key>"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    # When / Then: refused with the error shape, never a 5xx
    assert_error(call(client, ep, known_profile), 401)


# --- write key, secret key, staff -----------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_write_key_sends_events_but_cannot_read_profiles(ep, write_client, known_profile):
    # Given the source's public write key
    # When it calls the endpoint
    response = call(write_client, ep, known_profile)

    # Then events (and public endpoints) are allowed, profile reads are forbidden
    if ep.access == SECRET:
        assert_error(response, 403, "forbidden")
    else:
        assert_allowed(response, ep)


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_secret_key_is_allowed_everywhere(ep, secret_client, known_profile):
    assert_allowed(call(secret_client, ep, known_profile), ep)


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_staff_session_is_allowed_everywhere(ep, staff_client, known_profile):
    assert_allowed(call(staff_client, ep, known_profile), ep)


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_logged_in_non_staff_user_is_refused(ep, user_client, known_profile):
    # Given a logged-in user who is not staff (e.g. a shopper account)
    # When it calls the endpoint with its session only
    response = call(user_client, ep, known_profile)

    # Then protected endpoints refuse it
    if ep.access == PUBLIC:
        assert_allowed(response, ep)
    else:
        assert response.status_code in (401, 403)
        assert_error(response, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("ep", ENDPOINTS, ids=ids)
def test_inactive_staff_session_is_refused(ep, staff_client, known_profile):
    # Given a staff account that was deactivated after logging in
    get_user_model().objects.filter(username="staff").update(is_active=False)

    # When its old session calls the endpoint
    response = call(staff_client, ep, known_profile)

    # Then protected endpoints refuse it
    if ep.access == PUBLIC:
        assert_allowed(response, ep)
    else:
        assert response.status_code in (401, 403)
        assert_error(response, response.status_code)


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["write_key", "secret_key"])
@pytest.mark.parametrize("ep", PROTECTED, ids=protected_ids)
def test_deactivated_source_keys_are_401(ep, which, source: SourceKeys, known_profile):
    # Given a source whose keys worked, then was deactivated
    client = keyed(getattr(source, which))
    source.source.is_active = False
    source.source.save(update_fields=["is_active"])
    source_key_cache_clear()

    # When its key is used / Then it is refused as invalid
    assert_error(call(client, ep, known_profile), 401, "invalid_key")


# --- CORS -----------------------------------------------------------------------------

EVENT = {"type": "track", "event": "cors_probe", "anonymous_id": "a-cors"}


@pytest.mark.django_db
def test_allowed_origin_gets_allow_origin_header(write_client):
    # Given a browser on an origin the source allows
    # When it sends an event with the write key
    response = write_client.post(
        "/api/v1/events", EVENT, format="json", HTTP_ORIGIN="https://shop.example"
    )

    # Then it is accepted and the browser may read the answer
    assert response.status_code == 202, response.content
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
def test_other_origin_is_403_without_allow_origin(write_client):
    # Given a browser on a site that is not one of the source's origins
    # When it uses the (public) write key
    response = write_client.post(
        "/api/v1/events", EVENT, format="json", HTTP_ORIGIN="https://evil.example"
    )

    # Then it is refused and the browser cannot read the answer
    assert_error(response, 403, "forbidden")
    assert "Access-Control-Allow-Origin" not in response
    assert "evil.example" not in str(response.json())  # nothing echoed back


@pytest.mark.django_db
def test_other_origin_stores_nothing(write_client):
    from profiles.models import Event

    write_client.post("/api/v1/events", EVENT, format="json", HTTP_ORIGIN="https://evil.example")

    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_preflight_is_204_and_allows_authorization_header(anon_client):
    # Given a browser preflight (no key: browsers never send one on OPTIONS)
    response = anon_client.options(
        "/api/v1/events",
        HTTP_ORIGIN="https://shop.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )

    # Then it is answered and allows the Authorization header
    assert response.status_code == 204
    allowed = [h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")]
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
def test_same_origin_page_is_allowed(write_client):
    # Given the product's own page (the demo storefront) calling same-origin
    response = write_client.post(
        "/api/v1/events", EVENT, format="json", HTTP_ORIGIN="http://testserver"
    )

    # Then it is accepted
    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_secret_key_is_not_limited_by_origin(secret_client):
    # Given a server-side caller using the secret key with some Origin header
    response = secret_client.post(
        "/api/v1/events", EVENT, format="json", HTTP_ORIGIN="https://evil.example"
    )

    # Then the origin does not matter (the secret key never lives in a browser) …
    assert response.status_code == 202, response.content
    # … and no browser is told it may read the answer
    assert "Access-Control-Allow-Origin" not in response
