"""The marketer's segment screens."""

from __future__ import annotations

import orjson
import pytest
from django.urls import reverse

from cdp.models import AuditEvent
from segments.models import Membership, RecomputeRun, Segment, SegmentSize
from segments.services import recompute_run_execute, segment_recompute
from tests.conftest import post_events

CART = {"event": "add_to_cart", "within": "24h"}


@pytest.fixture
def shoppers(secret_client):
    post_events(
        secret_client,
        {
            "batch": [
                {"type": "track", "event": "add_to_cart", "user_id": "carter"},
                {"type": "track", "event": "viewed", "user_id": "browser"},
            ]
        },
    )


@pytest.mark.django_db
def test_a_bad_condition_is_refused_on_save_naming_the_node(superuser_client):
    # when a marketer saves a condition with a bad operator deep inside
    bad = {"all": [CART, {"attr": "purchase_count", "op": "bigger", "value": 1}]}
    response = superuser_client.post(
        reverse("admin:segments_segment_add"),
        {
            "name": "Broken",
            "slug": "broken",
            "condition": orjson.dumps(bad).decode(),
            "priority": 0,
            "refresh": "realtime",
            "active": "on",
        },
    )
    # then the form comes back with the path of the bad node, and nothing is saved
    assert response.status_code == 200
    assert "all[1].op" in response.content.decode()
    assert not Segment.objects.filter(slug="broken").exists()


@pytest.mark.django_db
def test_saving_a_segment_is_audited(superuser_client):
    response = superuser_client.post(
        reverse("admin:segments_segment_add"),
        {
            "name": "Carts",
            "slug": "carts",
            "condition": orjson.dumps(CART).decode(),
            "priority": 0,
            "refresh": "realtime",
            "active": "on",
        },
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="admin.segments.segment.added").exists()


@pytest.mark.django_db
def test_preview_shows_how_many_match_before_saving(superuser_client, shoppers):
    url = reverse("admin:segments_segment_preview")
    response = superuser_client.post(url, {"condition": orjson.dumps(CART).decode()})
    assert "1 profile match now" in response.content.decode()
    response = superuser_client.post(
        url, {"condition": '{"event": "add_to_cart", "within": "3 days"}'}
    )
    assert "within" in response.content.decode()
    assert "must look like" in response.content.decode()


@pytest.mark.django_db
def test_why_explains_each_node_for_a_profile(superuser_client, shoppers):
    segment = Segment.objects.create(
        slug="carts", name="Carts", condition={"all": [CART, {"not": {"event": "purchase"}}]}
    )
    url = reverse("admin:segments_segment_why", args=[segment.pk])
    page = superuser_client.get(url, {"profile": "browser"}).content.decode()
    assert "does not match" in page
    assert "count of add_to_cart = 0" in page
    page = superuser_client.get(url, {"profile": "carter"}).content.decode()
    assert "matches now" in page


@pytest.mark.django_db
def test_recompute_action_queues_a_run_whose_progress_the_list_shows(
    superuser_client, shoppers, celery_queued, django_capture_on_commit_callbacks
):
    segment = Segment.objects.create(slug="carts", name="Carts", condition=CART, refresh="manual")
    # When the marketer asks for a recompute, the page answers at once: the work is queued
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:segments_segment_changelist"),
            {"action": "recompute_now", "_selected_action": [segment.pk]},
            follow=True,
        )
    assert celery_queued == ["segments.tasks.segments_recompute"]
    page = response.content.decode()
    run = RecomputeRun.objects.get()
    assert f"Recompute #{run.pk} of 1 segment(s) queued" in page
    assert 'id="recompute-runs"' in page
    assert "Queued" in page
    assert '<meta http-equiv="refresh"' in page  # the list follows the run while it works
    assert AuditEvent.objects.filter(action="segments.recompute_requested").exists()
    assert not Membership.objects.exists()

    # When a worker runs it, the list shows it finished, with nothing left to follow
    recompute_run_execute(run_id=run.pk, slugs=run.slugs)
    page = superuser_client.get(reverse("admin:segments_segment_changelist")).content.decode()
    assert "Done" in page
    assert "1/1" in page
    assert '<meta http-equiv="refresh"' not in page
    assert Membership.objects.filter(segment=segment).count() == 1


@pytest.mark.django_db
def test_size_chart_after_two_recomputes(superuser_client, shoppers):
    segment = Segment.objects.create(slug="carts", name="Carts", condition=CART, refresh="manual")
    segment_recompute(segment=segment)
    segment_recompute(segment=segment)
    assert SegmentSize.objects.filter(segment=segment).count() == 2
    page = superuser_client.get(
        reverse("admin:segments_segment_change", args=[segment.pk])
    ).content.decode()
    assert "<svg" in page
    assert "Segment size over time" in page
    assert "1 profiles match the saved condition now" in page
