"""Segments API: reads (list with sizes, members by cursor, profile memberships) and the
management API (create, update, delete, preview) with validation and audit entries."""

from __future__ import annotations

import base64
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AuditEvent
from profiles.models import Identity
from segments import services
from segments.models import Membership, Segment

pytestmark = pytest.mark.django_db

PRO = {"trait": "plan", "op": "eq", "value": "pro"}


def make(slug: str, condition: Any, **fields: Any) -> Segment:
    return services.segment_save(
        segment=Segment(slug=slug, name=slug.title(), condition=condition, **fields), actor="test"
    )


def pid(value: str) -> uuid.UUID:
    return Identity.objects.get(value=value).profile_id


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture
def pros(ingest) -> list[uuid.UUID]:
    """Five pro customers and one free one; segment "pros" recomputed."""
    t0 = timezone.now() - timedelta(hours=1)
    ingest(
        *[
            {
                "type": "identify",
                "user_id": f"u{i}",
                "traits": {"plan": "pro"},
                "timestamp": t0.isoformat(),
            }
            for i in range(5)
        ],
        {"type": "identify", "user_id": "free", "traits": {"plan": "free"}},
    )
    make("pros", PRO, description="Paying customers", priority=3)
    services.segments_recompute_all()
    return [pid(f"u{i}") for i in range(5)]


# --- reads --------------------------------------------------------------------------------


def test_list_shows_segments_with_sizes(secret_client, pros):
    make("everyone", {"all": []})
    services.segments_recompute_all(only=["everyone"])

    response = secret_client.get("/api/v1/segments")

    assert response.status_code == 200, response.content
    by_slug = {s["slug"]: s for s in response.json()}
    assert by_slug["pros"]["size"] == 5
    assert by_slug["pros"]["condition"] == PRO
    assert by_slug["pros"]["description"] == "Paying customers"
    assert by_slug["pros"]["computed_at"] is not None
    assert by_slug["everyone"]["size"] == 6
    # higher priority first
    assert [s["slug"] for s in response.json()] == ["pros", "everyone"]


def test_members_paginate_by_cursor(secret_client, pros):
    # Given a segment of five members
    # When its members are read two at a time
    seen: list[str] = []
    pages = 0
    url: str | None = "/api/v1/segments/pros/members?limit=2"
    while url:
        response = secret_client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages += 1
        assert len(body["results"]) <= 2
        seen += body["results"]
        url = (
            f"/api/v1/segments/pros/members?limit=2&cursor={body['next']}" if body["next"] else None
        )
        assert pages <= 5

    # Then three pages cover every member exactly once
    assert pages == 3
    assert len(seen) == len(set(seen)) == 5
    assert {uuid.UUID(s) for s in seen} == set(pros)


def test_members_cursor_is_stable_when_members_change(secret_client, pros):
    first = secret_client.get("/api/v1/segments/pros/members?limit=2").json()
    # a member on the first page leaves before the second page is read
    Membership.objects.filter(profile_id=uuid.UUID(first["results"][0])).delete()
    rest = secret_client.get(
        f"/api/v1/segments/pros/members?limit=10&cursor={first['next']}"
    ).json()
    assert len(first["results"]) + len(rest["results"]) == 5
    assert not set(first["results"]) & set(rest["results"])
    assert rest["next"] is None


def test_members_of_an_empty_segment(secret_client):
    make("nobody", {"any": []})
    response = secret_client.get("/api/v1/segments/nobody/members")
    assert response.json() == {"results": [], "next": None}


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor", "!!!", base64.urlsafe_b64encode(b"hello").decode(), "%FF%FE"],
)
def test_bad_cursor_is_400(secret_client, pros, cursor):
    response = secret_client.get(f"/api/v1/segments/pros/members?cursor={cursor}")
    error = error_of(response, 400)
    assert "cursor" in error["details"]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "2.5"])
def test_limit_out_of_range_is_400(secret_client, pros, limit):
    response = secret_client.get(f"/api/v1/segments/pros/members?limit={limit}")
    error = error_of(response, 400)
    assert "limit" in error["details"]


def test_unknown_segment_is_404(secret_client):
    error_of(secret_client.get("/api/v1/segments/nope"), 404)
    error_of(secret_client.get("/api/v1/segments/nope/members"), 404)


def test_profile_read_lists_its_segments(secret_client, pros):
    make("all-of-them", {"all": []})
    make("frees", {"trait": "plan", "op": "eq", "value": "free"})
    services.segments_recompute_all()

    response = secret_client.get(f"/api/v1/profiles/{pros[0]}")

    assert response.status_code == 200, response.content
    segments = response.json()["segments"]
    assert [s["slug"] for s in segments] == ["all-of-them", "pros"]
    assert segments[1]["name"] == "Pros"
    assert segments[1]["since"]


# --- management API -----------------------------------------------------------------------


def test_create_segment(secret_client, source, pros):
    # When a segment is created through the API
    body = {
        "slug": "vips",
        "name": "VIPs",
        "condition": {"all": [{"segment": "pros"}, {"attr": "revenue", "op": "gte", "value": 100}]},
        "priority": 7,
        "exclusive_group": "tier",
    }
    response = secret_client.post("/api/v1/segments", body, format="json")

    # Then it is stored, answered with its size, and audited with the key as actor
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "vips"
    assert response.json()["size"] == 0
    segment = Segment.objects.get(slug="vips")
    assert (segment.priority, segment.exclusive_group, segment.condition) == (
        7,
        "tier",
        body["condition"],
    )
    entry = AuditEvent.objects.get(action="segment.created", object_id=str(segment.pk))
    assert entry.actor == f"key:{source.source.slug}"
    assert entry.object_type == "segments.segment"


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        ({"all": [PRO, {"trait": "plan", "op": "like", "value": "p"}]}, "all[1].op"),
        ({"any": [{"event": "add_to_cart", "within": "3 days"}]}, "any[0].within"),
        ({"all": [{"context": "device", "op": "eq", "value": "mobile"}]}, "all[0].context"),
        ({"all": [{"attr": "nope", "op": "gt", "value": 1}]}, "all[0].attr"),
        ({"not": {"segment": "ghost"}}, "segment"),
        ("pro", "(root)"),
        ({"all": [{"trait": "plan", "op": ["eq"], "value": "pro"}]}, "all[0].op"),
    ],
)
def test_create_with_a_bad_condition_is_400_naming_the_node(secret_client, condition, path):
    response = secret_client.post(
        "/api/v1/segments", {"slug": "bad", "name": "Bad", "condition": condition}, format="json"
    )
    error = error_of(response, 400)
    assert error["details"]["condition"]["path"] == path
    assert error["details"]["condition"]["reason"]
    assert not Segment.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="segment.").exists()


def test_create_with_a_taken_slug_or_missing_fields_is_400(secret_client, pros):
    error = error_of(
        secret_client.post(
            "/api/v1/segments", {"slug": "pros", "name": "X", "condition": PRO}, format="json"
        ),
        400,
    )
    assert "slug" in error["details"]
    error = error_of(secret_client.post("/api/v1/segments", {"slug": "x"}, format="json"), 400)
    assert {"name", "condition"} <= set(error["details"])


def test_put_patch_and_delete(secret_client, pros):
    # When a segment is replaced
    body = {"slug": "pros", "name": "Pro plan", "condition": {"not": PRO}, "priority": 1}
    response = secret_client.put("/api/v1/segments/pros", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "Pro plan"
    assert response.json()["condition"] == {"not": PRO}

    # When it is patched
    response = secret_client.patch(
        "/api/v1/segments/pros", {"description": "changed"}, format="json"
    )
    assert response.status_code == 200, response.content
    segment = Segment.objects.get(slug="pros")
    assert (segment.name, segment.description, segment.condition) == (
        "Pro plan",
        "changed",
        {"not": PRO},
    )

    # When a patch brings a bad condition / Then nothing changes
    response = secret_client.patch(
        "/api/v1/segments/pros",
        {"condition": {"not": {"trait": "plan", "op": "eq"}}},
        format="json",
    )
    assert error_of(response, 400)["details"]["condition"]["path"] == "not.value"
    assert Segment.objects.get(slug="pros").condition == {"not": PRO}

    # When it is deleted / Then it is gone with its memberships
    response = secret_client.delete("/api/v1/segments/pros")
    assert response.status_code == 204
    assert not Segment.objects.exists()
    assert not Membership.objects.exists()

    # and every change is in the audit log
    actions = list(
        AuditEvent.objects.filter(object_type="segments.segment", actor__startswith="key:")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["segment.updated", "segment.updated", "segment.deleted"]


def test_patch_into_a_cycle_is_400(secret_client):
    make("a", PRO)
    make("b", {"segment": "a"})
    response = secret_client.patch(
        "/api/v1/segments/a", {"condition": {"segment": "b"}}, format="json"
    )
    error = error_of(response, 400)
    assert "a -> b -> a" in error["message"]


def test_delete_of_a_referenced_segment_is_400(secret_client):
    make("a", PRO)
    make("b", {"segment": "a"})
    error = error_of(secret_client.delete("/api/v1/segments/a"), 400)
    assert "used by segment b" in error["message"]
    assert Segment.objects.filter(slug="a").exists()
    assert not AuditEvent.objects.filter(action="segment.deleted").exists()


def test_preview_counts_and_samples_without_saving(secret_client, pros):
    response = secret_client.post(
        "/api/v1/segments/preview", {"condition": PRO, "sample": 3}, format="json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 5
    assert len(body["sample"]) == 3
    assert {uuid.UUID(s) for s in body["sample"]} <= set(pros)
    assert Segment.objects.count() == 1  # only "pros"


def test_preview_with_a_bad_condition_is_400(secret_client):
    response = secret_client.post(
        "/api/v1/segments/preview",
        {"condition": {"any": [{"attr": "x", "op": "gt", "value": 1}]}},
        format="json",
    )
    assert error_of(response, 400)["details"]["condition"]["path"] == "any[0].attr"


def test_staff_session_manages_segments_as_the_user(staff_client):
    response = staff_client.post(
        "/api/v1/segments", {"slug": "s", "name": "S", "condition": PRO}, format="json"
    )
    assert response.status_code == 201, response.content
    assert AuditEvent.objects.get(action="segment.created").actor == "user:staff"


CALLS = [
    ("get", "/api/v1/segments", None),
    ("post", "/api/v1/segments", {"slug": "new", "name": "New", "condition": PRO}),
    ("get", "/api/v1/segments/pros", None),
    ("get", "/api/v1/segments/pros/members", None),
    ("put", "/api/v1/segments/pros", {"slug": "pros", "name": "P", "condition": PRO}),
    ("patch", "/api/v1/segments/pros", {"name": "P"}),
    ("delete", "/api/v1/segments/pros", None),
    ("post", "/api/v1/segments/preview", {"condition": PRO}),
]


@pytest.mark.parametrize(("method", "path", "body"), CALLS, ids=[f"{m} {p}" for m, p, _ in CALLS])
def test_write_key_is_403_on_segments(write_client: APIClient, pros, method, path, body):
    response = getattr(write_client, method)(path, body, format="json")
    assert error_of(response, 403)
    assert Segment.objects.get(slug="pros").name == "Pros"
    assert not AuditEvent.objects.filter(actor__startswith="key:").exists()
