"""Who may call what: the auth matrix of every routed endpoint, and CORS for browsers.

Adding an endpoint is one line in ENDPOINTS.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.test import APIClient

from consent import services as consent_services
from consent.models import DataSubjectRequest, RequestStatus, RequestType, SubjectKind
from experiments.models import Experiment
from experiments.services import experiment_save, experiment_transition
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
RUNNING_EXPERIMENT = "matrix-running"
EXPERIMENT_BODY = {
    "key": "matrix-new-experiment",
    "name": "New",
    "variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    "goals": [{"event": "purchase", "kind": "conversion"}],
}


SEGMENT_MESSAGES: dict[str, dict[str, Any]] = {
    "track": {"event": "matrix_probe", "anonymousId": "a-matrix"},
    "identify": {"anonymousId": "a-matrix", "traits": {"plan": "pro"}},
    "page": {"anonymousId": "a-matrix", "name": "Home"},
    "screen": {"anonymousId": "a-matrix", "name": "Home"},
    "alias": {"previousId": "a-matrix", "userId": "u-matrix-alias"},
    "group": {"anonymousId": "a-matrix", "groupId": "g-matrix"},
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
    # A staff session may call it (the browsable API); the Segment-compatible endpoints
    # take keys only, as Segment's libraries send them.
    staff_session: bool = True

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


# Segment-compatible tracking API: keys as Segment's libraries send them (Bearer works too).
SEGMENT_ENDPOINTS = [
    *(
        Endpoint(
            "POST",
            path,
            WRITE,
            body={"batch": [{"type": "track", **SEGMENT_MESSAGES["track"]}]},
            staff_session=False,
        )
        for path in ("/v1/batch", "/v1/b")
    ),
    *(
        Endpoint("POST", f"/v1/{name}", WRITE, body=message, staff_session=False)
        for kind, message in SEGMENT_MESSAGES.items()
        for name in (kind, kind[0])
    ),
]

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
    Endpoint(
        "PUT",
        "/api/v1/experiments/{experiment}",
        SECRET,
        body={**EXPERIMENT_BODY, "key": KNOWN_EXPERIMENT, "name": "Replaced"},
    ),
    Endpoint("PATCH", "/api/v1/experiments/{experiment}", SECRET, body={"name": "Renamed"}),
    Endpoint("DELETE", "/api/v1/experiments/{experiment}", SECRET, ok=204),
    Endpoint("POST", "/api/v1/experiments/{experiment}/start", SECRET),
    Endpoint("POST", "/api/v1/experiments/{running}/pause", SECRET),
    Endpoint("POST", "/api/v1/experiments/{running}/stop", SECRET),
    Endpoint("GET", "/api/v1/experiments/{experiment}/results", SECRET),
    Endpoint(
        "POST", "/api/v1/decide", WRITE, body={"user_id": KNOWN_USER_ID, "flags": ["matrix-flag"]}
    ),
    *SEGMENT_ENDPOINTS,
    Endpoint(
        "GET",
        "/v1/projects/{write_key}/settings",
        PUBLIC,
        refuses_wrong_key=False,  # the key is the path's; headers are not read
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
def known_profile(db: Any, privacy_export_dir: Any, source: SourceKeys) -> Profile:
    profile = Profile.objects.create()
    profile.matrix_write_key = source.write_key  # type: ignore[attr-defined]
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
    # … and a running one, to pause and stop
    running_slot = rules_services.slot_save(
        slot=Slot(key="matrix_running_slot"),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    running = experiment_save(
        experiment=Experiment(key=RUNNING_EXPERIMENT, name="Running", slot=running_slot),
        actor="test",
        variants=[{"key": "base", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    experiment_transition(experiment=running, move="start", actor="test")
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
        running=RUNNING_EXPERIMENT,
        write_key=getattr(profile, "matrix_write_key", "wk_unknown"),
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
    response = call(staff_client, ep, known_profile)
    if ep.staff_session:
        assert_allowed(response, ep)
    else:  # the Segment endpoints take keys only
        assert_error(response, 401, "unauthenticated")


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


# --- every routed endpoint is in the matrix -------------------------------------------


def _routed(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routed(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern), pattern.callback


def routed_api_operations() -> set[tuple[str, str]]:
    """(method, route) of every API operation the URLconf serves."""
    operations = set()
    for route, callback in _routed(get_resolver().url_patterns):
        if not route.startswith(("api/v1/", "v1/")):
            continue
        view = getattr(callback, "view_class", None)
        assert view is not None, f"{route}: not a class-based API view"
        for method in view.http_method_names:
            if method not in ("options", "head") and hasattr(view, method):
                operations.add((method.upper(), route))
    return operations


def test_every_routed_api_endpoint_is_in_the_auth_matrix():
    # Given every operation under /api/v1/ and /v1/ that the URLconf routes
    sample = {
        "profile_id": uuid.uuid4(),
        "request_id": KNOWN_REQUEST_ID,
        "user_id": KNOWN_USER_ID,
        "segment": KNOWN_SEGMENT,
        "slot": KNOWN_SLOT,
        "rule": KNOWN_RULE,
        "experiment": KNOWN_EXPERIMENT,
        "running": RUNNING_EXPERIMENT,
        "write_key": "wk_sample",
    }
    covered = {
        (ep.method, resolve(ep.path.format(**sample).split("?")[0]).route) for ep in ENDPOINTS
    }

    # Then each is in ENDPOINTS, so the matrix proves who may call it
    missing = sorted(routed_api_operations() - covered)
    assert missing == [], f"add these to ENDPOINTS (with the key they need): {missing}"


# --- CORS on the Segment-compatible endpoints -----------------------------------------


def segment_client(write_key: str) -> APIClient:
    client = APIClient()
    basic = base64.b64encode(f"{write_key}:".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {basic}")
    return client


@pytest.mark.django_db
def test_analytics_js_on_an_allowed_origin_may_read_the_answer(source):
    # Given analytics.js on the shop's origin, sending with the write key
    response = segment_client(source.write_key).post(
        "/v1/t", SEGMENT_MESSAGES["track"], format="json", HTTP_ORIGIN="https://shop.example"
    )

    # Then it is stored and the browser may read the answer
    assert response.status_code == 200, response.content
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
def test_analytics_js_on_another_site_is_refused_and_stores_nothing(source):
    from profiles.models import Event

    # Given a page on a site the source does not allow, with the shop's public write key
    response = segment_client(source.write_key).post(
        "/v1/batch",
        {"batch": [{"type": "track", **SEGMENT_MESSAGES["track"]}]},
        format="json",
        HTTP_ORIGIN="https://evil.example",
    )

    # Then it is refused, unreadable, and nothing is stored
    assert_error(response, 403, "forbidden")
    assert "Access-Control-Allow-Origin" not in response
    assert Event.objects.count() == 0


@pytest.mark.django_db
def test_a_write_key_in_a_text_plain_body_follows_the_origin_rules_too(source):
    # Given navigator.sendBeacon from another site (no header: the key is in the body)
    body = {"writeKey": source.write_key, **SEGMENT_MESSAGES["track"]}
    response = APIClient().post(
        "/v1/track",
        data=json.dumps(body),
        content_type="text/plain",
        HTTP_ORIGIN="https://evil.example",
    )

    # Then it is refused like any other call
    assert_error(response, 403, "forbidden")
    assert "Access-Control-Allow-Origin" not in response


@pytest.mark.django_db
def test_segment_preflight_allows_analytics_js_headers(anon_client):
    response = anon_client.options(
        "/v1/batch",
        HTTP_ORIGIN="https://shop.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, x-retry-count",
    )
    assert response.status_code == 204
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed


@pytest.mark.django_db
def test_settings_are_readable_only_from_allowed_origins(source, anon_client):
    path = f"/v1/projects/{source.write_key}/settings"
    allowed = anon_client.get(path, HTTP_ORIGIN="https://shop.example")
    other = anon_client.get(path, HTTP_ORIGIN="https://evil.example")
    assert allowed["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Access-Control-Allow-Origin" not in other


# --- identity verification: a write key cannot claim someone's user_id ---------------


@pytest.fixture
def strict_shop(verified_source: SourceKeys) -> SourceKeys:
    """A source that verifies user ids, with a known customer who has consent and data."""
    profile = Profile.objects.create(traits={"plan": "pro"})
    Identity.objects.create(kind=IdentityKind.USER_ID, value="u-victim", profile=profile)
    Identity.objects.create(kind=IdentityKind.ANONYMOUS_ID, value="a-victim", profile=profile)
    return verified_source


def _hash(source: SourceKeys, user_id: str) -> str:
    from profiles.keys import user_hash

    return user_hash(source.source.identity_secret, user_id)


def _write(source: SourceKeys) -> APIClient:
    return keyed(source.write_key)


IDENTITY_CALLS = [
    ("post", "/api/v1/decide", {"slots": ["matrix_slot"]}),
    ("get", "/api/v1/recommendations", {"strategy": "trending"}),
    ("get", "/api/v1/consent", {}),
    ("post", "/api/v1/consent", {"purposes": {"analytics": True}, "policy_version": "v1"}),
]
identity_ids = [f"{m.upper()} {p}" for m, p, _ in IDENTITY_CALLS]


def identity_call(client: APIClient, method: str, path: str, fields: dict[str, Any]) -> Any:
    if method == "get":
        return client.get(path, fields)
    return client.post(path, fields, format="json")


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "fields"), IDENTITY_CALLS, ids=identity_ids)
def test_a_user_id_without_user_hash_is_refused_where_the_source_verifies(
    strict_shop, method, path, fields
):
    # Given a browser claiming another customer's user_id, with no user_hash
    response = identity_call(_write(strict_shop), method, path, {**fields, "user_id": "u-victim"})

    # Then it is refused with a pointer at user_hash
    assert_error(response, 400)
    assert "user_hash" in response.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "fields"), IDENTITY_CALLS, ids=identity_ids)
def test_a_wrong_user_hash_is_refused(strict_shop, method, path, fields):
    forged = {**fields, "user_id": "u-victim", "user_hash": _hash(strict_shop, "u-attacker")}
    response = identity_call(_write(strict_shop), method, path, forged)
    assert_error(response, 400)
    assert "user_hash" in response.json()["error"]["message"]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "fields"), IDENTITY_CALLS, ids=identity_ids)
def test_a_valid_user_hash_is_served(strict_shop, method, path, fields):
    if path == "/api/v1/decide":
        rules_services.slot_save(
            slot=Slot(key="matrix_slot"), actor="t", variants=[{"key": "a"}], default_variant="a"
        )
    signed = {**fields, "user_id": "u-victim", "user_hash": _hash(strict_shop, "u-victim")}
    response = identity_call(_write(strict_shop), method, path, signed)
    assert response.status_code in (200, 201), response.content


@pytest.mark.django_db
def test_an_unverified_user_id_with_an_anonymous_id_reads_only_the_anonymous_visitor(
    strict_shop,
):
    # Given a browser that names its own anonymous id and someone else's user_id
    response = _write(strict_shop).get(
        "/api/v1/consent", {"user_id": "u-victim", "anonymous_id": "a-stranger"}
    )

    # Then it is answered about the anonymous visitor only, not the customer
    assert response.status_code == 200, response.content
    victim = Identity.objects.get(value="u-victim").profile_id
    assert str(victim) not in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v1/identify", "/v1/batch"])
def test_the_segment_endpoints_do_not_merge_an_unverified_user_id(strict_shop, path):
    # Given analytics.js identifying a stranger's browser as the customer, without userHash
    message = {"anonymousId": "a-stranger", "userId": "u-victim", "traits": {"plan": "free"}}
    body = {"batch": [{"type": "identify", **message}]} if path == "/v1/batch" else message
    response = segment_client(strict_shop.write_key).post(path, body, format="json")

    # Then the stranger's browser is not joined to the customer's profile
    assert response.status_code in (200, 400), response.content
    victim = Identity.objects.get(value="u-victim").profile
    assert not Identity.objects.filter(value="a-stranger", profile=victim).exists()
    victim.refresh_from_db()
    assert victim.traits.get("plan") == "pro"


@pytest.mark.django_db
def test_the_segment_endpoints_accept_a_valid_user_hash(strict_shop):
    message = {
        "anonymousId": "a-new-device",
        "userId": "u-victim",
        "userHash": _hash(strict_shop, "u-victim"),
    }
    response = segment_client(strict_shop.write_key).post("/v1/identify", message, format="json")
    assert response.status_code == 200, response.content
    victim = Identity.objects.get(value="u-victim").profile_id
    assert Identity.objects.get(value="a-new-device").profile_id == victim
