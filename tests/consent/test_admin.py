"""The compliance officer's admin: the request queue, exports, consent history, the
append-only audit log, and what the "Compliance" group may and may not do."""

from __future__ import annotations

import html
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AppendOnlyError, AuditEvent
from consent import services
from consent.models import ConsentRecord, DataSubjectRequest, RequestStatus
from profiles.models import Identity, IdentityKind, Source
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

REQUESTS = "/admin/consent/datasubjectrequest/"
RECORDS = "/admin/consent/consentrecord/"
AUDIT = "/admin/cdp/auditevent/"
USER = "u-admin-subject"


def page_text(response: Any) -> str:
    assert response.status_code == 200, response.status_code
    return html.unescape(response.content.decode())


def received(subject: str = USER, type: str = "access") -> DataSubjectRequest:
    return services.privacy_request_create(
        type=type, subject_kind="user_id", subject_value=subject, actor="key:shop"
    )


def consent(client: APIClient, user_id: str, purposes: dict[str, bool]) -> None:
    body = {"user_id": user_id, "purposes": purposes, "policy_version": "v1"}
    assert client.post("/api/v1/consent", body, format="json").status_code == 201


# --- the request queue -------------------------------------------------------------------


def test_overdue_requests_are_highlighted(superuser_client, privacy_export_dir):
    # Given one request past its deadline and one with time left
    late = received("u-late")
    DataSubjectRequest.objects.filter(pk=late.pk).update(
        received_at=timezone.now() - timedelta(days=40),
        due_at=timezone.now() - timedelta(days=10),
    )
    received("u-fresh")

    # When the officer opens the queue
    text = page_text(superuser_client.get(REQUESTS))

    # Then the late one is marked OVERDUE, once
    assert text.count("OVERDUE") == 1
    assert str(late.pk)[:8] in text


def test_a_completed_request_past_its_date_is_not_overdue(superuser_client, privacy_export_dir):
    dsr = received()
    services.privacy_request_reject(request=dsr, actor="user:admin", reason="no")
    DataSubjectRequest.objects.filter(pk=dsr.pk).update(due_at=timezone.now() - timedelta(days=1))

    assert "OVERDUE" not in page_text(superuser_client.get(REQUESTS))


def test_verify_and_process_action_completes_the_request(
    superuser_client,
    write_client,
    privacy_export_dir,
    celery_eager,
    django_capture_on_commit_callbacks,
):
    # Given a person with events and a received access request about them
    post_events(write_client, {"type": "track", "event": "viewed", "user_id": USER})
    dsr = received()

    # When the officer runs "verify and process" on it
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            REQUESTS,
            {"action": "verify_and_process", "_selected_action": [str(dsr.pk)]},
            follow=True,
        )

    # Then it is completed, verified by them, and its export can be downloaded
    assert response.status_code == 200
    assert "verified" in page_text(response)
    dsr.refresh_from_db()
    assert dsr.status == RequestStatus.COMPLETED
    assert dsr.verified_by == "user:admin"
    assert dsr.result["found"] is True
    assert services.export_path(request=dsr) is not None


def test_verify_and_process_on_a_completed_request_warns(
    superuser_client, privacy_export_dir, celery_eager, django_capture_on_commit_callbacks
):
    dsr = received()
    services.privacy_request_reject(request=dsr, actor="user:admin", reason="no")

    response = superuser_client.post(
        REQUESTS,
        {"action": "verify_and_process", "_selected_action": [str(dsr.pk)]},
        follow=True,
    )

    assert "rejected" in page_text(response)
    dsr.refresh_from_db()
    assert dsr.status == RequestStatus.REJECTED


def test_the_export_link_in_the_admin_serves_the_bundle(
    superuser_client, write_client, privacy_export_dir
):
    # Given a processed access request
    post_events(write_client, {"type": "track", "event": "viewed", "user_id": USER})
    dsr = received()
    services.privacy_request_verify(request=dsr, actor="user:admin")
    services.privacy_request_process(request_id=dsr.pk)

    # When the officer opens it and follows the download link
    text = page_text(superuser_client.get(f"{REQUESTS}{dsr.pk}/change/"))
    assert "Download the JSON bundle" in text
    link = f"{REQUESTS}{dsr.pk}/export/"
    assert link in text
    response = superuser_client.get(link)

    # Then the bundle is served as a file, and the download is audited
    assert response.status_code == 200
    bundle = orjson.loads(b"".join(response.streaming_content))
    assert "attachment" in response["Content-Disposition"]
    assert bundle["request"] == str(dsr.pk)
    assert len(bundle["sections"]["events"]) == 1
    assert AuditEvent.objects.filter(
        action="privacy.export.downloaded", object_id=str(dsr.pk), actor="user:admin"
    ).exists()


def test_requests_cannot_be_deleted_in_the_admin(superuser_client, privacy_export_dir):
    dsr = received()

    response = superuser_client.post(f"{REQUESTS}{dsr.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert DataSubjectRequest.objects.filter(pk=dsr.pk).exists()


# --- consent history --------------------------------------------------------------------


def test_consent_history_search_by_user_id_finds_that_persons_records(
    superuser_client, write_client
):
    # Given two people who recorded consent
    consent(write_client, USER, {"marketing": True, "analytics": False})
    consent(write_client, "u-someone-else", {"marketing": False})
    mine = Identity.objects.get(kind=IdentityKind.USER_ID, value=USER).profile_id
    theirs = Identity.objects.get(kind=IdentityKind.USER_ID, value="u-someone-else").profile_id

    # When the officer searches the consent history for the first one's user id
    response = superuser_client.get(RECORDS, {"q": USER})

    # Then exactly their records are listed
    text = page_text(response)
    shown = list(response.context["cl"].result_list)
    assert {r.profile_id for r in shown} == {mine}
    assert len(shown) == 2
    assert str(mine) in text
    assert str(theirs) not in text


def test_consent_records_cannot_be_added_changed_or_deleted_in_the_admin(
    superuser_client, write_client
):
    consent(write_client, USER, {"marketing": True})
    record = ConsentRecord.objects.get()

    assert superuser_client.get(f"{RECORDS}add/").status_code == 403
    assert (
        superuser_client.post(f"{RECORDS}{record.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    superuser_client.post(f"{RECORDS}{record.pk}/change/", {"granted": ""})
    record.refresh_from_db()
    assert record.granted is True
    assert ConsentRecord.objects.count() == 1


# --- the audit log ----------------------------------------------------------------------


@pytest.fixture
def audit_entry(db: Any) -> AuditEvent:
    from cdp.audit import audit_record

    return audit_record(actor="user:someone", action="privacy.access.received", object_id="x1")


def test_audit_log_is_listed_for_the_superuser(superuser_client, audit_entry):
    text = page_text(superuser_client.get(AUDIT))

    assert "privacy.access.received" in text


def test_audit_log_refuses_add_change_and_delete_even_for_a_superuser(
    superuser_client, audit_entry
):
    # When a superuser tries to add, edit or delete an audit entry in the admin
    add = superuser_client.get(f"{AUDIT}add/")
    delete = superuser_client.post(f"{AUDIT}{audit_entry.pk}/delete/", {"post": "yes"})
    change = superuser_client.post(
        f"{AUDIT}{audit_entry.pk}/change/", {"actor": "user:nobody", "action": "edited"}
    )
    bulk = superuser_client.post(
        AUDIT, {"action": "delete_selected", "_selected_action": [audit_entry.pk], "post": "yes"}
    )

    # Then each is refused and the entry is unchanged
    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    assert bulk.status_code in (200, 302, 403)
    entry = AuditEvent.objects.get(pk=audit_entry.pk)
    assert (entry.actor, entry.action) == ("user:someone", "privacy.access.received")


def test_audit_log_cannot_be_deleted_or_updated_in_bulk(audit_entry):
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=audit_entry.pk).delete()
    with pytest.raises(AppendOnlyError):
        AuditEvent.objects.filter(pk=audit_entry.pk).update(actor="user:nobody")
    with pytest.raises(AppendOnlyError):
        audit_entry.delete()
    audit_entry.actor = "user:nobody"
    with pytest.raises(AppendOnlyError):
        audit_entry.save()

    entry = AuditEvent.objects.get(pk=audit_entry.pk)
    assert entry.actor == "user:someone"


# --- the Compliance group -----------------------------------------------------------------


def test_compliance_officer_sees_the_request_queue_and_the_audit_log(
    compliance_client, audit_entry, privacy_export_dir
):
    # Given a staff member of the Compliance group and a request in the queue
    dsr = received()

    # When they open their screens / Then they can
    assert str(dsr.pk)[:8] in page_text(compliance_client.get(REQUESTS))
    assert "privacy.access.received" in page_text(compliance_client.get(AUDIT))
    assert compliance_client.get(RECORDS).status_code == 200


def test_compliance_officer_can_process_a_request(
    compliance_client, privacy_export_dir, celery_eager, django_capture_on_commit_callbacks
):
    dsr = received()

    with django_capture_on_commit_callbacks(execute=True):
        compliance_client.post(
            REQUESTS, {"action": "verify_and_process", "_selected_action": [str(dsr.pk)]}
        )

    dsr.refresh_from_db()
    assert dsr.status == RequestStatus.COMPLETED
    assert dsr.verified_by == "user:officer"


def test_compliance_officer_cannot_edit_sources(compliance_client, source):
    # Given a staff member of the Compliance group
    # When they open a source's change page or the add page / Then they are refused
    assert (
        compliance_client.get(f"/admin/profiles/source/{source.source.pk}/change/").status_code
        == 403
    )
    assert compliance_client.get("/admin/profiles/source/add/").status_code == 403
    response = compliance_client.post(
        "/admin/profiles/source/add/", {"name": "Sneaky", "slug": "sneaky", "allowed_origins": "[]"}
    )
    assert response.status_code == 403
    assert not Source.objects.filter(slug="sneaky").exists()


def test_adding_a_source_in_the_admin_is_audited(superuser_client):
    # When an admin adds a source
    form = {
        "name": "Audited shop",
        "slug": "audited-shop",
        "allowed_origins": '["https://audited.example"]',
        "is_active": "on",
    }
    response = superuser_client.post("/admin/profiles/source/add/", form, follow=True)

    # Then an audit entry names the action, who did it and the source
    assert response.status_code == 200
    made = Source.objects.get(slug="audited-shop")
    entry = AuditEvent.objects.get(action="admin.profiles.source.added")
    assert entry.actor == "user:admin"
    assert entry.object_type == "profiles.source"
    assert entry.object_id == str(made.pk)
