"""GET /api/v1/profiles/{id} and GET /api/v1/profiles?user_id=|anonymous_id=|email=."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from rest_framework.test import APIClient

from profiles.models import Identity, IdentityKind, Profile
from tests.conftest import post_events

pytestmark = pytest.mark.django_db


def send(client: APIClient, body: Any) -> None:
    response = post_events(client, body)
    assert response.status_code == 202, response.content


def get(client: APIClient, url: str, **params: str) -> Any:
    response = client.get(url, params)
    assert response.status_code < 500, response.content
    return response


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def shopper(secret_client: APIClient) -> Profile:
    """A known user who browsed, identified with an email and bought once."""
    send(
        secret_client,
        {
            "batch": [
                {"type": "page", "anonymous_id": "a1", "properties": {"path": "/"}},
                {
                    "type": "identify",
                    "anonymous_id": "a1",
                    "user_id": "u1",
                    "traits": {"email": "Ada@Example.com", "plan": "pro"},
                },
                {
                    "type": "track",
                    "event": "purchase",
                    "user_id": "u1",
                    "properties": {"revenue": 42.5},
                },
            ]
        },
    )
    return Profile.objects.get(identities__kind=IdentityKind.USER_ID, identities__value="u1")


def test_profile_detail_shows_traits_computed_attributes_and_identities(secret_client, shopper):
    # When the server reads the profile by id
    response = get(secret_client, f"/api/v1/profiles/{shopper.pk}")

    # Then it sees what the profile holds
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(shopper.pk)
    assert body["traits"]["plan"] == "pro"
    computed = body["computed"]
    assert computed["event_count"] == 3
    assert computed["page_view_count"] == 1
    assert computed["purchase_count"] == 1
    assert float(computed["revenue"]) == 42.5
    assert computed["last_seen_at"]
    kinds = {(i["kind"], i["value"]) for i in body["identities"]}
    assert ("user_id", "u1") in kinds
    assert ("anonymous_id", "a1") in kinds
    assert any(kind == "email" for kind, _ in kinds)


def test_profile_detail_never_shows_the_raw_email_identity(secret_client, shopper):
    body = get(secret_client, f"/api/v1/profiles/{shopper.pk}").json()

    emails = [i["value"] for i in body["identities"] if i["kind"] == "email"]
    assert emails
    assert all("@" not in value for value in emails)


def test_merged_away_id_answers_with_the_surviving_profile(secret_client):
    # Given an anonymous visitor and a known user, each with a profile
    send(secret_client, {"type": "page", "anonymous_id": "a-visitor"})
    send(secret_client, {"type": "identify", "user_id": "u-known", "traits": {"plan": "pro"}})
    visitor = Profile.objects.get(identities__value="a-visitor")
    known = Profile.objects.get(identities__value="u-known")
    assert visitor.pk != known.pk

    # When the visitor logs in as that user (the two are merged)
    send(secret_client, {"type": "identify", "user_id": "u-known", "anonymous_id": "a-visitor"})

    # Then the visitor's old id answers with the surviving profile, which holds both
    response = get(secret_client, f"/api/v1/profiles/{visitor.pk}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(known.pk)
    assert str(visitor.pk) in body["merged_from"]
    assert {i["value"] for i in body["identities"]} >= {"u-known", "a-visitor"}
    assert body["computed"]["page_view_count"] == 1


def test_unknown_profile_id_is_404_with_error_shape(secret_client):
    response = get(secret_client, f"/api/v1/profiles/{uuid.uuid4()}")

    error_of(response, 404, "not_found")


def test_malformed_profile_id_is_404_with_error_shape(secret_client):
    response = get(secret_client, "/api/v1/profiles/not-a-uuid")

    error_of(response, 404, "not_found")


@pytest.mark.parametrize(
    ("param", "value"),
    [("user_id", "u1"), ("anonymous_id", "a1"), ("email", "Ada@Example.com")],
)
def test_lookup_by_any_identity(secret_client, shopper, param, value):
    response = get(secret_client, "/api/v1/profiles", **{param: value})

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(shopper.pk)


def test_email_lookup_ignores_case_and_spaces(secret_client, shopper):
    response = get(secret_client, "/api/v1/profiles", email="  ada@example.COM ")

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(shopper.pk)


def test_email_is_stored_only_as_a_keyed_hash(shopper):
    values = Identity.objects.filter(kind=IdentityKind.EMAIL).values_list("value", flat=True)

    assert values
    assert all("ada" not in v.lower() for v in values)


@pytest.mark.parametrize(
    "params",
    [{}, {"user_id": "u1", "email": "ada@example.com"}, {"user_id": "u1", "anonymous_id": "a1"}],
    ids=["none", "user_id+email", "user_id+anonymous_id"],
)
def test_lookup_needs_exactly_one_identity(secret_client, shopper, params):
    error = error_of(get(secret_client, "/api/v1/profiles", **params), 400, "invalid")

    assert error["details"]


@pytest.mark.parametrize(
    ("param", "value"),
    [("user_id", "nobody"), ("anonymous_id", "nobody"), ("email", "nobody@example.com")],
)
def test_lookup_of_unknown_identity_is_404(secret_client, shopper, param, value):
    error_of(get(secret_client, "/api/v1/profiles", **{param: value}), 404, "not_found")


def test_email_hash_typed_as_email_does_not_find_the_profile(secret_client, shopper):
    # The stored hash is not itself an email: looking it up hashes it again
    stored = Identity.objects.get(kind=IdentityKind.EMAIL).value

    error_of(get(secret_client, "/api/v1/profiles", email=stored), 404, "not_found")


def test_lookup_of_a_merged_identity_answers_with_the_survivor(secret_client):
    send(secret_client, {"type": "page", "anonymous_id": "a-visitor"})
    send(secret_client, {"type": "identify", "user_id": "u-known"})
    send(secret_client, {"type": "identify", "user_id": "u-known", "anonymous_id": "a-visitor"})
    known = Profile.objects.get(identities__value="u-known")

    body = get(secret_client, "/api/v1/profiles", anonymous_id="a-visitor").json()

    assert body["id"] == str(known.pk)


@pytest.mark.parametrize(
    ("param", "value"),
    [("user_id", "u\x001"), ("anonymous_id", "a\x00"), ("email", "ada\x00@example.com")],
)
def test_lookup_with_a_nul_character_is_a_4xx_not_a_5xx(secret_client, shopper, param, value):
    # Given a value no identity can hold (PostgreSQL text cannot contain NUL)
    response = get(secret_client, "/api/v1/profiles", **{param: value})

    # Then the answer is "not found" or "invalid", never an internal error
    assert response.status_code in (400, 404), response.content
