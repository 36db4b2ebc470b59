"""The admin screens a marketer or operator uses: sources and their keys, profiles, schemas."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.messages import get_messages
from rest_framework.test import APIClient

from profiles.models import EventSchema, Profile, Source
from profiles.services import SourceKeys
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

WRITE_KEY_RE = re.compile(r"\bwk_[A-Za-z0-9_-]{20,}")
SECRET_KEY_RE = re.compile(r"\bsk_[A-Za-z0-9_-]{20,}")


def keyed(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def messages_text(response: Any) -> str:
    return " ".join(str(m) for m in get_messages(response.wsgi_request))


def keys_in(text: str) -> tuple[str, str]:
    writes, secrets_ = WRITE_KEY_RE.findall(text), SECRET_KEY_RE.findall(text)
    assert len(writes) == 1, text
    assert len(secrets_) == 1, text
    return writes[0], secrets_[0]


def event_status(key: str, anonymous_id: str = "a-admin") -> int:
    response = post_events(keyed(key), {"type": "page", "anonymous_id": anonymous_id})
    return int(response.status_code)


# --- sources --------------------------------------------------------------------------


def test_adding_a_source_shows_its_keys_once_and_they_work(superuser_client):
    # Given an operator on the "add source" form
    form = {
        "name": "Web shop",
        "slug": "web-shop",
        "allowed_origins": '["https://shop.example"]',
        "is_active": "on",
    }

    # When the form is saved
    response = superuser_client.post("/admin/profiles/source/add/", form, follow=True)

    # Then the source exists and the raw keys are shown in the message
    assert response.status_code == 200
    source = Source.objects.get(slug="web-shop")
    assert source.allowed_origins == ["https://shop.example"]
    write_key, secret_key = keys_in(messages_text(response))
    assert write_key.startswith(source.write_key_prefix)
    assert secret_key.startswith(source.secret_key_prefix)

    # … and they work against the API
    assert event_status(write_key) == 202
    assert event_status(secret_key) == 202

    # … and they are not shown again
    page = superuser_client.get(f"/admin/profiles/source/{source.pk}/change/")
    assert page.status_code == 200
    content = html.unescape(page.content.decode())
    assert write_key not in content
    assert secret_key not in content


def test_source_form_refuses_an_origin_that_is_not_a_url(superuser_client):
    form = {"name": "Bad", "slug": "bad", "allowed_origins": '["shop.example"]', "is_active": "on"}

    response = superuser_client.post("/admin/profiles/source/add/", form)

    assert response.status_code == 200
    assert "is not an origin" in html.unescape(response.content.decode())
    assert not Source.objects.filter(slug="bad").exists()


def test_rotate_keys_action_shows_new_keys_and_retires_the_old(superuser_client, source):
    # Given a source whose write key is in use
    assert event_status(source.write_key) == 202

    # When the operator rotates its keys from the changelist
    response = superuser_client.post(
        "/admin/profiles/source/",
        {"action": "rotate_keys", "_selected_action": [source.source.pk]},
        follow=True,
    )

    # Then new keys are shown, they work, and the old ones do not
    assert response.status_code == 200
    new_write, new_secret = keys_in(messages_text(response))
    assert new_write != source.write_key
    assert event_status(new_write) == 202
    assert event_status(new_secret) == 202
    assert event_status(source.write_key) == 401
    assert event_status(source.secret_key) == 401


def test_rotate_with_grace_keeps_the_old_keys_working_for_a_day(superuser_client, source):
    # When the operator rotates with the grace period, before the shop is redeployed
    response = superuser_client.post(
        "/admin/profiles/source/",
        {"action": "rotate_keys_with_grace", "_selected_action": [source.source.pk]},
        follow=True,
    )

    # Then both the new and the old keys work, and the source says until when
    new_write, _ = keys_in(messages_text(response))
    assert event_status(new_write) == 202
    assert event_status(source.write_key) == 202
    page = superuser_client.get(f"/admin/profiles/source/{source.source.pk}/change/")
    assert "Previous keys expire at" in page.content.decode()


def test_editing_a_source_applies_at_once(superuser_client, source: SourceKeys):
    # Given a live write key, when the operator deactivates the source in the admin
    assert event_status(source.write_key) == 202
    s = source.source
    response = superuser_client.post(
        f"/admin/profiles/source/{s.pk}/change/",
        {"name": s.name, "slug": s.slug, "allowed_origins": "[]"},  # is_active unticked
        follow=True,
    )
    assert response.status_code == 200

    # Then its key stops working right away
    assert event_status(source.write_key) == 401


# --- profiles -------------------------------------------------------------------------


@pytest.fixture
def ada(secret_client: APIClient) -> Profile:
    response = post_events(
        secret_client,
        {
            "batch": [
                {"type": "page", "anonymous_id": "anon-ada", "properties": {"path": "/shoes"}},
                {
                    "type": "identify",
                    "anonymous_id": "anon-ada",
                    "user_id": "user-ada",
                    "traits": {"email": "ada@example.com"},
                },
                {"type": "track", "event": "add_to_cart", "user_id": "user-ada"},
            ]
        },
    )
    assert response.status_code == 202, response.content
    # Someone else, who must not show up in the results
    post_events(secret_client, {"type": "identify", "user_id": "user-bob", "anonymous_id": "b"})
    return Profile.objects.get(identities__value="user-ada")


@pytest.mark.parametrize("term", ["user-ada", "anon-ada", "ada@example.com", "  ADA@example.com "])
def test_profile_search_finds_by_any_identity(superuser_client, ada, term):
    # When the marketer types an identity into the profile search
    response = superuser_client.get("/admin/profiles/profile/", {"q": term})

    # Then exactly that profile is listed
    assert response.status_code == 200
    shown = list(response.context["cl"].result_list)
    assert [p.pk for p in shown] == [ada.pk]


def test_profile_search_by_profile_id(superuser_client, ada):
    response = superuser_client.get("/admin/profiles/profile/", {"q": str(ada.pk)})

    assert [p.pk for p in response.context["cl"].result_list] == [ada.pk]


def test_profile_search_with_no_match_lists_nothing(superuser_client, ada):
    response = superuser_client.get("/admin/profiles/profile/", {"q": "nobody"})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


def test_profile_page_shows_the_event_timeline(superuser_client, ada):
    # When the marketer opens the profile
    response = superuser_client.get(f"/admin/profiles/profile/{ada.pk}/change/")

    # Then its events are listed, and its identities
    assert response.status_code == 200
    content = html.unescape(response.content.decode())
    assert "add_to_cart" in content
    assert "/shoes" in content
    assert "identify" in content
    assert "user-ada" in content


def test_profile_changelist_and_event_changelist_render(superuser_client, ada):
    assert superuser_client.get("/admin/profiles/profile/").status_code == 200
    assert superuser_client.get("/admin/profiles/event/").status_code == 200
    assert superuser_client.get("/admin/profiles/event/", {"q": "user-ada"}).status_code == 200


# --- event schemas --------------------------------------------------------------------


def test_event_schema_admin_refuses_an_invalid_json_schema(superuser_client):
    # When a schema that is not valid JSON Schema is saved
    response = superuser_client.post(
        "/admin/profiles/eventschema/add/",
        {"event": "purchase", "schema": '{"type": 5}', "mode": "strict", "enabled": "on"},
    )

    # Then the form is shown again with a message pointing at the problem
    assert response.status_code == 200
    content = html.unescape(response.content.decode())
    assert "Not a valid JSON Schema" in content
    assert not EventSchema.objects.exists()


def test_event_schema_admin_refuses_non_object_schema(superuser_client):
    response = superuser_client.post(
        "/admin/profiles/eventschema/add/",
        {"event": "purchase", "schema": "[1, 2]", "mode": "strict", "enabled": "on"},
    )

    assert response.status_code == 200
    assert "JSON Schema is a JSON object" in html.unescape(response.content.decode())
    assert not EventSchema.objects.exists()


def test_event_schema_saved_in_admin_applies_at_once(superuser_client, write_client):
    # Given a strict schema saved through the admin
    response = superuser_client.post(
        "/admin/profiles/eventschema/add/",
        {
            "event": "purchase",
            "schema": '{"type": "object", "required": ["revenue"]}',
            "mode": "strict",
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content

    # Then the next purchase without revenue is refused
    rejected = post_events(
        write_client, {"type": "track", "event": "purchase", "anonymous_id": "a1"}
    )
    assert rejected.status_code == 400
