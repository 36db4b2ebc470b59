"""Rotating a source's keys: at once, or with a grace period during which the old keys
keep working, so a storefront can be redeployed with its new write key without losing
events."""

from __future__ import annotations

import io
from datetime import timedelta

import orjson
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AuditEvent
from profiles.models import Source
from profiles.selectors import source_key_cache_clear
from profiles.services import SourceKeys, source_keys_rotate

pytestmark = pytest.mark.django_db


def status_with(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {"type": "track", "event": "rotated", "anonymous_id": "a-rot"}
    return client.post("/api/v1/events", body, format="json").status_code


def rotate(slug: str, *args: str) -> dict:
    out = io.StringIO()
    call_command("rotate_source_keys", slug, *args, stdout=out)
    return orjson.loads(out.getvalue())


def test_with_a_grace_period_old_and_new_keys_both_work_until_it_ends(source: SourceKeys):
    # Given a shop sending with its write key
    assert status_with(source.write_key) == 202

    # When the operator rotates its keys with a day's grace
    made = rotate(source.source.slug, "--grace-hours", "24")

    # Then the new keys work, and so do the old ones, for that day
    assert made["write_key"] != source.write_key
    assert status_with(made["write_key"]) == 202
    assert status_with(made["secret_key"]) == 202
    assert status_with(source.write_key) == 202
    assert status_with(source.secret_key) == 202
    until = made["old_keys_valid_until"]
    assert until is not None
    expires = Source.objects.get(pk=source.source.pk).previous_keys_expire_at
    assert expires is not None
    left = expires - timezone.now()
    assert timedelta(hours=23, minutes=59) < left <= timedelta(hours=24)

    # When the day has passed
    Source.objects.filter(pk=source.source.pk).update(
        previous_keys_expire_at=timezone.now() - timedelta(seconds=1)
    )
    source_key_cache_clear()

    # Then only the new keys work
    assert status_with(source.write_key) == 401
    assert status_with(source.secret_key) == 401
    assert status_with(made["write_key"]) == 202


def test_without_a_grace_period_the_old_keys_stop_at_once(source: SourceKeys):
    made = rotate(source.source.slug)

    assert made["old_keys_valid_until"] is None
    assert status_with(source.write_key) == 401
    assert status_with(made["write_key"]) == 202


def test_a_second_rotation_with_grace_is_refused_while_one_runs(source: SourceKeys):
    # Given a rotation with grace (the shop is still deploying its new key)
    first = rotate(source.source.slug, "--grace-hours", "24")

    # When the operator runs it again (a double click, a re-run)
    with pytest.raises(CommandError, match="grace period until"):
        rotate(source.source.slug, "--grace-hours", "24")

    # Then nothing changed: the original and the first rotation's keys both still work
    assert status_with(source.write_key) == 202
    assert status_with(first["write_key"]) == 202

    # And a rotation without grace (a leak) ends it: only the newest keys work
    newest = rotate(source.source.slug)
    assert status_with(source.write_key) == 401
    assert status_with(first["write_key"]) == 401
    assert status_with(newest["write_key"]) == 202


def test_rotation_is_audited_and_refuses_bad_input(source: SourceKeys):
    rotate(source.source.slug, "--grace-hours", "2")

    entry = AuditEvent.objects.get(action="source.keys_rotated")
    assert entry.details == {"grace_hours": 2.0}
    with pytest.raises(CommandError, match="no source"):
        rotate("no-such-shop")
    with pytest.raises(CommandError, match="between 0 and 720"):
        rotate(source.source.slug, "--grace-hours", "-1")


def test_the_service_keeps_no_previous_key_when_rotating_at_once(source: SourceKeys):
    made = source_keys_rotate(source=source.source)

    fresh = Source.objects.get(pk=source.source.pk)
    assert fresh.previous_write_key_hash == ""
    assert fresh.previous_keys_expire_at is None
    assert made.write_key.startswith("wk_")
