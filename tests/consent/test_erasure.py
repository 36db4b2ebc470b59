"""Erasure leaves nothing behind, checked by searching the database, the cache and the
export files for the person's identifiers, not by trusting the handlers."""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import orjson
import pytest
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import connection

from cdp.models import AuditEvent
from cdp.privacy import covered_models
from consent import services
from consent.models import ConsentRecord, DataSubjectRequest
from profiles import keys
from profiles.models import Event, Identity, Profile
from profiles.privacy import identity_cache_key, profile_cache_key
from tests.conftest import post_events

USER = "erase-me-user-7f3a"
ANON = "erase-me-anon-9c2b"
ANON_OLD = "erase-me-old-device-51d0"
EMAIL = "Erase.Me@Example.com"
PHONE = "+47 915 55 123"
OTHER_USER = "keep-me-user-2222"


def _database_text() -> str:
    """Every row of every table, as text."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks).lower()


def _cache_text() -> str:
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith("RedisCache"):
        client = cache._cache.get_client()  # type: ignore[attr-defined]
        parts = []
        for key in client.scan_iter():
            parts.append(repr(key))
            kind = client.type(key)
            if kind == b"string":
                value = client.get(key)
                parts.append(repr(value))
                with contextlib.suppress(Exception):  # raw ints are not pickled
                    parts.append(repr(pickle.loads(value)))
            elif kind == b"list":
                parts.append(repr(client.lrange(key, 0, -1)))
            elif kind == b"set":
                parts.append(repr(client.smembers(key)))
            elif kind == b"zset":
                parts.append(repr(client.zrange(key, 0, -1)))
            elif kind == b"hash":
                parts.append(repr(client.hgetall(key)))
        return "\n".join(parts).lower()
    store = cache._cache  # type: ignore[attr-defined]
    return "\n".join(repr(k) + repr(pickle.loads(v)) for k, v in store.items()).lower()


def _files_text() -> str:
    folder = Path(settings.CDP["PRIVACY_EXPORT_DIR"])
    if not folder.exists():
        return ""
    return "\n".join(p.read_text(errors="replace") for p in folder.iterdir() if p.is_file()).lower()


def _identifiers() -> list[str]:
    key = settings.CDP["PII_HASH_KEY"]
    return [
        USER.lower(),
        ANON.lower(),
        ANON_OLD.lower(),
        EMAIL.lower(),
        keys.pii_hash(key, EMAIL),
        keys.phone_hash(key, PHONE),
        "915 55 123",
        "91555123",
    ]


@pytest.fixture
def export_dir(tmp_path, settings):
    settings.CDP = {**settings.CDP, "PRIVACY_EXPORT_DIR": str(tmp_path / "exports")}
    return tmp_path / "exports"


@pytest.fixture
def person(write_client, secret_client, export_dir):
    """A person with every kind of data the CDP holds."""
    # an old device, browsing anonymously, with its own consent choice
    post_events(
        write_client,
        {
            "batch": [
                {"type": "page", "anonymous_id": ANON_OLD, "name": "Home"},
                {
                    "type": "track",
                    "event": "add_to_cart",
                    "anonymous_id": ANON_OLD,
                    "properties": {"sku": "a"},
                },
            ]
        },
    )
    write_client.post(
        "/api/v1/consent",
        {"anonymous_id": ANON_OLD, "purposes": {"marketing": True}, "policy_version": "v1"},
        format="json",
    )
    # the identified person on a new device
    post_events(
        secret_client,
        {
            "batch": [
                {
                    "type": "identify",
                    "user_id": USER,
                    "anonymous_id": ANON,
                    "traits": {"email": EMAIL, "phone": PHONE, "name": "Erase Me"},
                },
                {
                    "type": "track",
                    "event": "purchase",
                    "user_id": USER,
                    "properties": {"revenue": 42},
                },
            ]
        },
    )
    # later they tie the old device to their account: a merge in the database
    post_events(secret_client, {"type": "alias", "user_id": USER, "previous_id": ANON_OLD})
    # someone else used the person's device once (a shared device): their id sits on it
    post_events(
        secret_client,
        {"type": "track", "event": "viewed", "user_id": OTHER_USER, "anonymous_id": ANON},
    )
    write_client.post(
        "/api/v1/consent",
        {"user_id": USER, "purposes": {"analytics": True}, "policy_version": "v2"},
        format="json",
    )
    # an earlier access request left an export file
    access = services.privacy_request_create(
        type="access", subject_kind="email", subject_value=EMAIL, actor="test"
    )
    services.privacy_request_verify(request=access, actor="test")
    services.privacy_request_process(request_id=access.pk)
    # cache entries about them, under the documented key convention
    profile = Identity.objects.get(kind="user_id", value=USER).profile
    cache.set(identity_cache_key("user_id", USER), {"profile": str(profile.pk), "user": USER}, 60)
    cache.set(
        profile_cache_key(profile.pk), {"traits": {"name": "Erase Me"}, "ids": [USER, ANON]}, 60
    )
    return Identity.objects.get(kind="user_id", value=USER).profile


@pytest.mark.django_db
def test_the_fixture_person_really_holds_everything(person, export_dir):
    text = _database_text()
    assert all(i.lower() in text for i in (USER, ANON, ANON_OLD))
    assert Profile.objects.filter(merged_into=person).exists()
    assert ConsentRecord.objects.filter(profile=person).count() == 2
    assert Identity.objects.filter(profile=person, kind="phone").exists()
    assert any(export_dir.iterdir())


@pytest.mark.django_db
def test_export_contains_every_kind_of_data(person, export_dir):
    # given the person's access request was processed
    dsr = DataSubjectRequest.objects.get(type="access")
    bundle = orjson.loads((export_dir / dsr.export_file).read_bytes())
    # then every section is present, with their events
    sections = bundle["sections"]
    assert {"profiles", "identities", "events", "consent", "merges", "privacy_requests"} <= set(
        sections
    )
    assert (
        len(sections["events"])
        == Event.objects.filter(profile__in=[person, *person.merged_profiles.all()]).count()
    )
    assert {i["kind"] for i in sections["identities"]} == {
        "user_id",
        "anonymous_id",
        "email",
        "phone",
    }


@pytest.mark.django_db
def test_erasure_leaves_no_row_cache_key_or_file(
    person, secret_client, django_capture_on_commit_callbacks
):
    # when an erasure request by email is verified and processed
    with django_capture_on_commit_callbacks(execute=True):
        response = secret_client.post(
            "/api/v1/privacy/requests", {"type": "erasure", "email": EMAIL}, format="json"
        )
    dsr = DataSubjectRequest.objects.get(pk=response.json()["id"])
    with django_capture_on_commit_callbacks(execute=True):
        services.privacy_request_verify(request=dsr, actor="user:officer")
    services.privacy_request_process(request_id=dsr.pk)  # idempotent if the task already ran
    dsr.refresh_from_db()
    assert dsr.status == "completed"
    # then no identifier of theirs is left anywhere
    leftovers = {
        "database": [i for i in _identifiers() if i.lower() in _database_text()],
        "cache": [i for i in _identifiers() if i.lower() in _cache_text()],
        "files": [i for i in _identifiers() if i.lower() in _files_text()],
    }
    assert leftovers == {"database": [], "cache": [], "files": []}
    # the other person's event on the shared device is still there, without the erased id
    assert Event.objects.filter(user_id=OTHER_USER, anonymous_id__isnull=True).count() == 1
    # and the audit trail says what happened without naming them
    entry = AuditEvent.objects.get(action="privacy.erasure.completed")
    assert entry.details["deleted"]["events"] >= 5
    assert not any(i.lower() in repr(entry.details).lower() for i in _identifiers())


@pytest.mark.django_db
def test_late_events_do_not_recreate_an_erased_person(person, write_client, secret_client):
    # given the person was erased
    dsr = services.privacy_request_create(
        type="erasure", subject_kind="user_id", subject_value=USER, actor="test"
    )
    services.privacy_request_verify(request=dsr, actor="test")
    services.privacy_request_process(request_id=dsr.pk)
    profiles_before = Profile.objects.count()
    # when late events arrive from their identities (a queued batch, an open tab)
    late = post_events(
        secret_client,
        {
            "batch": [
                {"type": "track", "event": "viewed", "user_id": USER},
                {"type": "page", "anonymous_id": ANON},
                {"type": "identify", "user_id": "someone-new", "traits": {"email": EMAIL}},
            ]
        },
    )
    # then they are dropped, not stored, and recreate no one
    assert late.status_code == 202
    assert late.json()["accepted"] == 0
    assert late.json()["dropped"] == 3
    assert Profile.objects.count() == profiles_before
    assert not Identity.objects.filter(value__in=[USER, ANON]).exists()
    # and their browser cannot record consent under the erased id either
    again = write_client.post(
        "/api/v1/consent",
        {"anonymous_id": ANON, "purposes": {"analytics": True}, "policy_version": "v3"},
        format="json",
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "identity_erased"


def test_every_model_holding_personal_data_has_a_privacy_handler():
    # A model pointing at a profile, or storing an identifier, must be exported and erased.
    identifier_fields = {
        "user_id",
        "anonymous_id",
        "email",
        "phone",
        "subject_value",
        "previous_id",
    }
    # Staff accounts of the CDP itself are not customers' personal data held by the CDP.
    exempt = {"auth.User"}
    missing = []
    for model in apps.get_models():
        if model._meta.label in exempt:
            continue
        points_at_profile = model is Profile or any(
            getattr(f, "related_model", None) is Profile
            for f in model._meta.get_fields()
            if f.is_relation and f.concrete
        )
        stores_identifier = any(f.name in identifier_fields for f in model._meta.concrete_fields)
        if (points_at_profile or stores_identifier) and model not in covered_models():
            missing.append(model._meta.label)
    assert missing == []
