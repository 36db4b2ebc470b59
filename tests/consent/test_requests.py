"""Data subject requests: POST/GET /api/v1/privacy/requests, the access export bundle,
its retention, the workflow and its audit trail."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from django.http import FileResponse
from django.utils import timezone
from jsonschema import Draft202012Validator
from rest_framework.test import APIClient

from cdp.errors import ApplicationError
from cdp.models import AuditEvent
from consent import services
from consent.models import DataSubjectRequest, RequestStatus
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

URL = "/api/v1/privacy/requests"
USER = "u-subject-4711"
ANON = "a-subject-4711"
EMAIL = "Subject.Person@Example.com"


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["message"]
    return body["error"]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def open_request(client: APIClient, **body: Any) -> Any:
    response = client.post(URL, {"type": "access", **body}, format="json")
    assert response.status_code < 500, response.content
    return response


def download(client: APIClient, url: str) -> tuple[Any, dict[str, Any]]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    raw = b"".join(response.streaming_content)  # type: ignore[attr-defined]  # read to the end: closes the file
    return response, orjson.loads(raw)


@pytest.fixture
def subject(write_client, privacy_export_dir) -> int:
    """A person with history: anonymous browsing, a login (merge), consent. Returns how
    many events they sent."""
    browsing: list[dict[str, Any]] = [
        {"type": "page", "anonymous_id": ANON, "properties": {"path": "/"}},
        {"type": "track", "event": "product_viewed", "anonymous_id": ANON},
    ]
    login: list[dict[str, Any]] = [
        {
            "type": "identify",
            "user_id": USER,
            "anonymous_id": ANON,
            "traits": {"email": EMAIL, "plan": "gold"},
        },
        {"type": "track", "event": "purchase", "user_id": USER, "properties": {"revenue": 30}},
    ]
    # the customer had their own profile already, so logging in merges two profiles
    calls: list[list[dict[str, Any]]] = [[{"type": "identify", "user_id": USER}], browsing, login]
    for batch in calls:
        assert post_events(write_client, {"batch": batch}).json()["accepted"] == len(batch)
    consent = {"user_id": USER, "purposes": {"marketing": True}, "policy_version": "v1"}
    assert write_client.post("/api/v1/consent", consent, format="json").status_code == 201
    return sum(len(batch) for batch in calls)


# --- opening a request -----------------------------------------------------------------


def test_post_opens_a_request_due_in_30_days(secret_client, privacy_export_dir):
    # When the shop's server forwards an access request
    response = open_request(secret_client, user_id=USER)

    # Then it is received, due 30 days after receipt
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "received"
    uuid.UUID(body["id"])
    received = when(body["received_at"])
    assert abs((received - timezone.now()).total_seconds()) < 60
    assert abs((when(body["due_at"]) - (received + timedelta(days=30))).total_seconds()) < 1
    assert body["export_url"] is None
    # … and it is stored as such
    dsr = DataSubjectRequest.objects.get(pk=body["id"])
    assert dsr.status == RequestStatus.RECEIVED


def test_due_days_are_configurable(secret_client, settings, privacy_export_dir):
    settings.CDP = {**settings.CDP, "PRIVACY_DUE_DAYS": 14}

    body = open_request(secret_client, user_id=USER).json()

    assert abs((when(body["due_at"]) - when(body["received_at"])) - timedelta(days=14)) < timedelta(
        seconds=1
    )


def test_get_answers_the_status(secret_client, privacy_export_dir):
    made = open_request(secret_client, user_id=USER).json()

    response = secret_client.get(f"{URL}/{made['id']}")

    assert response.status_code == 200, response.content
    assert response.json()["id"] == made["id"]
    assert response.json()["status"] == "received"


def test_unknown_request_id_is_404(secret_client):
    error = error_of(secret_client.get(f"{URL}/{uuid.uuid4()}"), 404)

    assert error["code"] == "not_found"


def test_export_of_an_unknown_request_is_404(secret_client):
    error = error_of(secret_client.get(f"{URL}/{uuid.uuid4()}/export"), 404)

    assert error["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "access"}, "subject"),
        ({"type": "access", "user_id": USER, "anonymous_id": ANON}, "subject"),
        ({"type": "access", "user_id": USER, "email": EMAIL}, "subject"),
        ({"type": "forget_me", "user_id": USER}, "type"),
        ({"user_id": USER}, "type"),
        ({"type": "erasure", "email": "not-an-email"}, "email"),
    ],
    ids=["no subject", "two subjects", "id and email", "bad type", "no type", "invalid email"],
)
def test_bad_bodies_are_400_naming_the_field(secret_client, body, field):
    error = error_of(secret_client.post(URL, body, format="json"), 400)

    assert field in error["details"]
    assert DataSubjectRequest.objects.count() == 0


# --- processing an access request ------------------------------------------------------


def test_verified_access_request_is_processed_into_an_export(
    secret_client, subject, celery_eager, django_capture_on_commit_callbacks
):
    # Given a person with events, identities, a merge and consent
    # When the shop forwards their access request, already verified
    with django_capture_on_commit_callbacks(execute=True):
        response = open_request(secret_client, user_id=USER, verified=True)
    assert response.status_code == 202, response.content

    # Then it is completed with an export link
    status = secret_client.get(f"{URL}/{response.json()['id']}").json()
    assert status["status"] == "completed", status
    assert status["completed_at"]
    assert status["result"]["found"] is True
    assert status["export_url"].endswith(f"{URL}/{response.json()['id']}/export")

    # … and the secret key downloads the bundle as a streamed JSON file
    file, bundle = download(secret_client, status["export_url"])
    assert isinstance(file, FileResponse)
    assert file.streaming
    assert file["Content-Type"] == "application/json"
    assert "attachment" in file["Content-Disposition"]
    assert bundle["found"] is True
    sections = bundle["sections"]
    assert {"profiles", "identities", "events", "consent", "merges"} <= set(sections)
    # … holding every event they sent
    assert len(sections["events"]) == subject
    identities = {(i["kind"], i["value"]) for i in sections["identities"]}
    assert ("user_id", USER) in identities
    assert ("anonymous_id", ANON) in identities
    assert [(c["purpose"], c["granted"]) for c in sections["consent"]] == [("marketing", True)]
    assert len(sections["merges"]) >= 1
    # … and the counts in the result match the bundle
    assert status["result"]["records"] == {k: len(v) for k, v in sections.items()}


def test_access_request_by_email_finds_the_person(
    secret_client, subject, celery_eager, django_capture_on_commit_callbacks
):
    # Given the person's email is stored only as a keyed hash
    # When they ask by email (in another case)
    with django_capture_on_commit_callbacks(execute=True):
        made = open_request(secret_client, email=EMAIL.upper(), verified=True).json()

    # Then they are found and their events exported
    status = secret_client.get(f"{URL}/{made['id']}").json()
    assert status["status"] == "completed"
    assert status["result"]["found"] is True
    _, bundle = download(secret_client, status["export_url"])
    assert len(bundle["sections"]["events"]) == subject


def test_access_for_an_unknown_person_completes_with_nothing_found(
    secret_client, privacy_export_dir, celery_eager, django_capture_on_commit_callbacks
):
    # When someone the CDP never saw asks what is held about them
    with django_capture_on_commit_callbacks(execute=True):
        made = open_request(secret_client, user_id="u-nobody", verified=True).json()

    # Then the request completes, says nothing was found, and the export is empty
    status = secret_client.get(f"{URL}/{made['id']}").json()
    assert status["status"] == "completed"
    assert status["result"]["found"] is False
    _, bundle = download(secret_client, status["export_url"])
    assert bundle["found"] is False
    assert bundle["sections"] == {}


def test_the_export_is_removed_after_its_retention(secret_client, subject):
    # Given a completed access request with its export
    dsr = services.privacy_request_create(
        type="access", subject_kind="user_id", subject_value=USER, actor="user:officer"
    )
    services.privacy_request_verify(request=dsr, actor="user:officer")
    services.privacy_request_process(request_id=dsr.pk)
    dsr.refresh_from_db()
    file = services.export_path(request=dsr)
    assert file is not None
    assert file.exists()

    # When the retention job runs after the retention period
    removed = services.privacy_exports_expire(now=timezone.now() + timedelta(days=8))

    # Then the file is gone and the export endpoint answers 404
    assert removed == 1
    assert not file.exists()
    assert error_of(secret_client.get(f"{URL}/{dsr.pk}/export"), 404)["code"] == "not_found"
    assert secret_client.get(f"{URL}/{dsr.pk}").json()["export_url"] is None


def test_the_retention_job_keeps_exports_still_within_retention(secret_client, subject):
    dsr = services.privacy_request_create(
        type="access", subject_kind="user_id", subject_value=USER, actor="user:officer"
    )
    services.privacy_request_verify(request=dsr, actor="user:officer")
    services.privacy_request_process(request_id=dsr.pk)

    assert services.privacy_exports_expire(now=timezone.now() + timedelta(days=1)) == 0

    assert secret_client.get(f"{URL}/{dsr.pk}").json()["export_url"]


# --- workflow and audit -------------------------------------------------------------------


def test_verifying_twice_is_a_clear_error(privacy_export_dir):
    # Given a request that was verified
    dsr = services.privacy_request_create(
        type="access", subject_kind="user_id", subject_value=USER, actor="user:officer"
    )
    services.privacy_request_verify(request=dsr, actor="user:officer")

    # When someone verifies it again / Then it is refused, saying why
    with pytest.raises(ApplicationError) as caught:
        services.privacy_request_verify(request=dsr, actor="user:other")
    assert caught.value.code == "invalid_state"
    assert "verified" in caught.value.message
    dsr.refresh_from_db()
    assert dsr.verified_by == "user:officer"


def test_reject_records_who_did_it(privacy_export_dir):
    # Given a received request
    dsr = services.privacy_request_create(
        type="erasure", subject_kind="user_id", subject_value=USER, actor="user:clerk"
    )

    # When the officer rejects it
    services.privacy_request_reject(
        request=dsr, actor="user:officer", reason="identity could not be verified"
    )

    # Then it is rejected, with the reason and who did what in its history
    dsr.refresh_from_db()
    assert dsr.status == RequestStatus.REJECTED
    assert dsr.rejected_reason == "identity could not be verified"
    assert [(h["by"], h["action"]) for h in dsr.history] == [
        ("user:clerk", "received"),
        ("user:officer", "rejected"),
    ]
    assert all(h["at"] for h in dsr.history)
    # … and a rejected request cannot be verified or rejected again
    with pytest.raises(ApplicationError):
        services.privacy_request_verify(request=dsr, actor="user:officer")
    with pytest.raises(ApplicationError):
        services.privacy_request_reject(request=dsr, actor="user:officer", reason="again")


def test_every_step_is_audited_without_raw_identifiers(
    secret_client, subject, celery_eager, django_capture_on_commit_callbacks
):
    # Given an access request and an erasure request about the person
    with django_capture_on_commit_callbacks(execute=True):
        access = open_request(secret_client, user_id=USER, verified=True).json()
    erasure = secret_client.post(URL, {"type": "erasure", "email": EMAIL}, format="json").json()
    services.privacy_request_reject(
        request=DataSubjectRequest.objects.get(pk=erasure["id"]),
        actor="user:officer",
        reason="not verified",
    )
    dsr = DataSubjectRequest.objects.get(pk=access["id"])
    services.privacy_exports_expire(now=timezone.now() + timedelta(days=30))

    # Then every step left an audit entry …
    entries = AuditEvent.objects.filter(object_type="consent.datasubjectrequest")
    by_object: dict[str, list[str]] = {}
    for entry in entries:
        by_object.setdefault(entry.object_id, []).append(entry.action)
    assert sorted(by_object[str(dsr.pk)]) == sorted(
        [
            "privacy.access.received",
            "privacy.access.verified",
            "privacy.access.completed",
            "privacy.export.expired",
        ]
    )
    assert sorted(by_object[erasure["id"]]) == [
        "privacy.erasure.received",
        "privacy.erasure.rejected",
    ]
    actors = {e.actor for e in entries}
    assert "user:officer" in actors
    assert "system" in actors
    # … and none of them holds the person's identifiers
    text = orjson.dumps(
        list(entries.values("actor", "action", "object_type", "object_id", "details"))
    ).decode()
    for raw in (USER, ANON, EMAIL, EMAIL.lower()):
        assert raw not in text


def test_the_export_matches_its_documented_schema(
    secret_client, anon_client, subject, celery_eager, django_capture_on_commit_callbacks
):
    # Given a completed access request (found by tests/hardening/test_fuzz.py: the bundle
    # was documented as a binary string while it is a JSON object)
    with django_capture_on_commit_callbacks(execute=True):
        response = open_request(secret_client, user_id=USER, verified=True)
    status = secret_client.get(f"{URL}/{response.json()['id']}").json()
    _, bundle = download(secret_client, status["export_url"])

    # Then the bundle is what the OpenAPI schema says the export answers
    openapi = anon_client.get("/api/schema/?format=json").json()
    media = openapi["paths"][URL + "/{request_id}/export"]["get"]["responses"]["200"]["content"]
    Draft202012Validator({**openapi, **media["application/json"]["schema"]}).validate(bundle)
