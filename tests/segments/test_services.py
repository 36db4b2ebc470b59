"""Segment services: definitions (validated, cycle-free), batch recompute with the atomic
swap, exclusive groups, merges, privacy, and real-time refresh."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import orjson
import pytest
from django.core.cache import cache
from django.utils import timezone

from cdp.errors import ValidationFailed
from cdp.models import AuditEvent
from cdp.privacy import covered_models
from consent import services as consent_services
from profiles.models import Identity, Profile
from segments import services
from segments.models import Membership, ProfileScore, RefreshPolicy, Segment, SegmentSize
from tests.conftest import post_events

pytestmark = pytest.mark.django_db

PRO = {"trait": "plan", "op": "eq", "value": "pro"}
CART = {"event": "add_to_cart", "within": "24h"}


def make(slug: str, condition: Any, **fields: Any) -> Segment:
    return services.segment_save(
        segment=Segment(slug=slug, name=slug.title(), condition=condition, **fields), actor="test"
    )


def pid(value: str) -> uuid.UUID:
    return Identity.objects.get(value=value).profile_id


def members(slug: str) -> set[uuid.UUID]:
    return set(Membership.objects.filter(segment__slug=slug).values_list("profile_id", flat=True))


def identify(user: str, ts: Any = None, **traits: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "identify", "user_id": user, "traits": traits}
    if ts is not None:
        body["timestamp"] = ts.isoformat()
    return body


def track(event: str, ts: Any = None, **ids: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "track", "event": event, **ids}
    if ts is not None:
        body["timestamp"] = ts.isoformat()
    return body


# --- definitions ------------------------------------------------------------------------


def test_save_refuses_a_bad_condition_naming_the_node():
    # Given a condition whose second child has an unknown operator
    condition = {"all": [PRO, {"attr": "revenue", "op": "greater", "value": 3}]}

    # When it is saved / Then it is refused, and the details point at the node
    with pytest.raises(ValidationFailed) as caught:
        make("bad", condition)
    assert caught.value.details["condition"]["path"] == "all[1].op"
    assert "must be one of" in caught.value.details["condition"]["reason"]
    assert "all[1].op" in caught.value.message
    assert not Segment.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="segment.").exists()


def test_save_refuses_an_unknown_referenced_segment():
    with pytest.raises(ValidationFailed) as caught:
        make("fans", {"any": [PRO, {"segment": "nobody-made-me"}]})
    assert "nobody-made-me" in caught.value.message
    assert caught.value.details["condition"]["path"] == "segment"
    assert not Segment.objects.exists()


def test_save_refuses_a_cycle_naming_it():
    # Given b refers to a
    a = make("a", PRO)
    make("b", {"segment": "a"})

    # When a is changed to refer to b
    a.condition = {"all": [{"segment": "b"}]}
    with pytest.raises(ValidationFailed) as caught:
        services.segment_save(segment=a, actor="test")

    # Then it is refused with the cycle in the message, and a keeps its condition
    assert "a -> b -> a" in caught.value.message
    assert "cycle" in caught.value.details["condition"]["reason"]
    assert Segment.objects.get(slug="a").condition == PRO


def test_save_refuses_a_segment_that_refers_to_itself():
    with pytest.raises(ValidationFailed) as caught:
        make("me", {"not": {"segment": "me"}})
    assert "me -> me" in caught.value.message


def test_save_writes_audit_entries():
    segment = make("pros", PRO)
    segment.name = "Pros"
    services.segment_save(segment=segment, actor="user:ann")
    actions = list(
        AuditEvent.objects.filter(object_type="segments.segment")
        .order_by("id")
        .values_list("action", "actor")
    )
    assert actions == [("segment.created", "test"), ("segment.updated", "user:ann")]


def test_dependency_order_puts_referenced_segments_first():
    # Given c → b → a, with c and b of higher priority than a
    make("a", PRO)
    make("b", {"segment": "a"}, priority=5)
    make("c", {"all": [{"segment": "b"}, {"segment": "a"}]}, priority=9)
    make("d", {"consent": "marketing"}, priority=1)

    # When they are ordered
    order = [s.slug for s in services.dependency_order(Segment.objects.all())]

    # Then every segment comes after those it refers to
    assert sorted(order) == ["a", "b", "c", "d"]
    assert order.index("a") < order.index("b") < order.index("c")


def test_dependency_levels_let_only_independent_segments_share_a_wave():
    # Given a chain, a free-standing segment, and an exclusive group of two
    make("a", PRO)
    make("b", {"segment": "a"}, priority=5)
    make("free", {"consent": "marketing"})
    make("gold", PRO, exclusive_group="tier", priority=9)
    make("silver", PRO, exclusive_group="tier", priority=1)

    # When they are split into waves computed in parallel
    waves = [sorted(s.slug for s in w) for w in services.dependency_levels(Segment.objects.all())]

    # Then a referenced segment, and the higher-priority member of a group, come a wave earlier
    assert waves == [["a", "free", "gold"], ["b", "silver"]]


def test_delete_refuses_a_segment_another_refers_to():
    a = make("a", PRO)
    b = make("b", {"not": {"segment": "a"}})

    with pytest.raises(ValidationFailed) as caught:
        services.segment_delete(segment=a, actor="test")
    assert "used by segment b" in caught.value.message
    assert Segment.objects.filter(slug="a").exists()

    # once the user is gone, it can go
    services.segment_delete(segment=b, actor="test")
    services.segment_delete(segment=Segment.objects.get(slug="a"), actor="test")
    assert not Segment.objects.exists()
    assert AuditEvent.objects.filter(action="segment.deleted").count() == 2


# --- batch recompute ----------------------------------------------------------------------


def test_recompute_builds_memberships_keeps_since_and_removes_leavers(ingest):
    # Given three people, two on the pro plan
    t0 = timezone.now() - timedelta(hours=3)
    ingest(
        identify("ann", t0, plan="pro"),
        identify("bob", t0, plan="pro"),
        identify("cy", t0, plan="free"),
    )
    segment = make("pros", PRO)

    # When the segment is recomputed
    t1 = timezone.now() - timedelta(hours=2)
    first = services.segment_recompute(segment=segment, now=t1)

    # Then the pros are members since then, and a size point is written
    assert members("pros") == {pid("ann"), pid("bob")}
    assert (first.size, first.added, first.removed) == (2, 2, 0)
    assert set(Membership.objects.values_list("since", flat=True)) == {t1}

    # Given bob downgrades and cy upgrades
    t_change = timezone.now() - timedelta(hours=1)
    ingest(identify("bob", t_change, plan="free"), identify("cy", t_change, plan="pro"))

    # When it is recomputed again
    t2 = timezone.now()
    second = services.segment_recompute(segment=segment, now=t2)

    # Then ann stays (since kept), bob left, cy joined now
    assert members("pros") == {pid("ann"), pid("cy")}
    since = dict(Membership.objects.values_list("profile_id", "since"))
    assert since[pid("ann")] == t1
    assert since[pid("cy")] == t2
    assert (second.size, second.added, second.removed) == (2, 1, 1)
    segment.refresh_from_db()
    assert segment.size == 2
    assert segment.computed_at == t2
    history = list(
        SegmentSize.objects.filter(segment=segment).values_list("at", "size", "added", "removed")
    )
    assert history == [(t2, 2, 1, 1), (t1, 2, 2, 0)]


def test_recompute_counts_events_in_the_window(ingest):
    now = timezone.now()
    ingest(
        track("add_to_cart", now - timedelta(hours=2), anonymous_id="recent"),
        track("add_to_cart", now - timedelta(hours=30), anonymous_id="old"),
        track("page_view", now - timedelta(hours=1), anonymous_id="browser"),
    )
    segment = make("carts", CART)

    services.segment_recompute(segment=segment, now=now)

    assert members("carts") == {pid("recent")}


def test_recompute_all_resolves_segments_in_segments_in_the_same_pass(ingest):
    # Given buyers, and "pro buyers" (higher priority, so it would naively go first)
    t0 = timezone.now() - timedelta(hours=1)
    ingest(
        identify("ann", t0, plan="pro"),
        identify("bob", t0, plan="pro"),
        identify("cy", t0, plan="free"),
        track("purchase", t0, user_id="ann"),
        track("purchase", t0, user_id="cy"),
    )
    make("buyers", {"event": "purchase"})
    make("pro-buyers", {"all": [{"segment": "buyers"}, PRO]}, priority=50)
    make("not-buyers", {"not": {"segment": "buyers"}}, priority=40)

    # When all segments are recomputed once, from scratch
    services.segments_recompute_all()

    # Then the dependants saw the fresh buyers
    assert members("buyers") == {pid("ann"), pid("cy")}
    assert members("pro-buyers") == {pid("ann")}
    assert members("not-buyers") == {pid("bob")}


def test_exclusive_group_keeps_a_profile_only_in_the_higher_priority_segment(ingest):
    # Given gold (priority 10) and silver (priority 5) in one group; ann matches both
    t0 = timezone.now() - timedelta(hours=1)
    ingest(identify("ann", t0, plan="pro", vip=True), identify("bob", t0, plan="pro"))
    make("silver", PRO, priority=5, exclusive_group="tier")
    make("gold", {"trait": "vip", "op": "eq", "value": True}, priority=10, exclusive_group="tier")
    make("pros", PRO)  # no group: overlaps freely

    # When all are recomputed
    services.segments_recompute_all()

    # Then ann is only gold, bob silver; the ungrouped segment has both
    assert members("gold") == {pid("ann")}
    assert members("silver") == {pid("bob")}
    assert members("pros") == {pid("ann"), pid("bob")}
    assert Segment.objects.get(slug="silver").size == 1

    # Given bob becomes vip too
    ingest(identify("bob", timezone.now(), vip=True))

    # When all are recomputed again / Then he moved from silver to gold
    services.segments_recompute_all()
    assert members("gold") == {pid("ann"), pid("bob")}
    assert members("silver") == set()


def test_exclusive_group_also_holds_in_real_time(ingest):
    t0 = timezone.now() - timedelta(minutes=5)
    ingest(identify("ann", t0, plan="pro"))
    make("silver", PRO, priority=5, exclusive_group="tier")
    make("gold", {"trait": "vip", "op": "eq", "value": True}, priority=10, exclusive_group="tier")
    services.realtime_refresh(profile_ids=[pid("ann")])
    assert members("silver") == {pid("ann")}

    # When ann becomes vip and is refreshed in real time
    ingest(identify("ann", timezone.now(), vip=True))
    result = services.realtime_refresh(profile_ids=[pid("ann")])

    # Then she is gold only, and the sizes follow
    assert members("gold") == {pid("ann")}
    assert members("silver") == set()
    assert result == {"added": 1, "removed": 1}
    assert dict(Segment.objects.values_list("slug", "size")) == {"gold": 1, "silver": 0}


def test_recompute_ignores_inactive_segments(ingest):
    ingest(identify("ann", plan="pro"))
    make("pros", PRO, active=False)
    assert services.segments_recompute_all() == []
    assert members("pros") == set()


# --- merges and privacy -------------------------------------------------------------------


def test_merge_drops_the_absorbed_profiles_memberships_and_reevaluates_the_survivor(
    ingest, celery_eager, django_capture_on_commit_callbacks
):
    # Given an anonymous visitor with a cart, and a known customer without one
    now = timezone.now()
    ingest(track("add_to_cart", now - timedelta(hours=2), anonymous_id="laptop"))
    ingest(identify("u-merge", now - timedelta(hours=3), plan="pro"))
    anonymous, known = pid("laptop"), pid("u-merge")
    make("carts", CART)
    make("pros", PRO)
    services.segments_recompute_all()
    assert members("carts") == {anonymous}
    assert members("pros") == {known}

    # When the visitor logs in as the customer (the profiles merge)
    with django_capture_on_commit_callbacks(execute=True):
        ingest({"type": "identify", "anonymous_id": "laptop", "user_id": "u-merge"})

    # Then only the surviving profile is a member, of both segments
    survivor = pid("u-merge")
    absorbed = ({anonymous, known} - {survivor}).pop()
    assert Profile.objects.get(pk=absorbed).merged_into_id == survivor
    assert members("carts") == {survivor}
    assert members("pros") == {survivor}
    assert not Membership.objects.filter(profile_id=absorbed).exists()


def test_privacy_registry_covers_segments_data():
    assert {Membership, ProfileScore} <= covered_models()


def test_access_export_lists_memberships_and_erasure_removes_them(ingest, privacy_export_dir):
    # Given a customer in a segment, with a model score, and someone else in it too
    ingest(identify("u-priv", plan="pro"), identify("u-other", plan="pro"))
    make("pros", PRO)
    services.segments_recompute_all()
    ProfileScore.objects.create(
        profile_id=pid("u-priv"), model="churn", score=0.8, computed_at=timezone.now()
    )

    # When their access request is processed
    access = consent_services.privacy_request_create(
        type="access", subject_kind="user_id", subject_value="u-priv", actor="test"
    )
    consent_services.privacy_request_verify(request=access, actor="test")
    access = consent_services.privacy_request_process(request_id=access.pk)

    # Then the bundle lists the membership and the score
    bundle = orjson.loads((privacy_export_dir / access.export_file).read_bytes())
    assert [m["segment"] for m in bundle["sections"]["segment_memberships"]] == ["pros"]
    assert [s["model"] for s in bundle["sections"]["scores"]] == ["churn"]

    # When they ask to be erased
    person = pid("u-priv")
    erasure = consent_services.privacy_request_create(
        type="erasure", subject_kind="user_id", subject_value="u-priv", actor="test"
    )
    consent_services.privacy_request_verify(request=erasure, actor="test")
    erasure = consent_services.privacy_request_process(request_id=erasure.pk)

    # Then their membership and score are gone; the other member's is not
    assert erasure.result["deleted"]["segment_memberships"] == 1
    assert erasure.result["deleted"]["scores"] == 1
    assert not Membership.objects.filter(profile_id=person).exists()
    assert not ProfileScore.objects.filter(profile_id=person).exists()
    assert members("pros") == {pid("u-other")}


# --- real time --------------------------------------------------------------------------


def test_add_to_cart_through_the_api_makes_the_visitor_a_member(
    write_client, celery_eager, django_capture_on_commit_callbacks
):
    # Given a real-time segment of recent cart adders
    make("carts", CART)

    # When a visitor adds to cart through the public API
    with django_capture_on_commit_callbacks(execute=True):
        response = post_events(
            write_client,
            {
                "type": "track",
                "event": "add_to_cart",
                "anonymous_id": "v-rt",
                "properties": {"sku": "A"},
            },
        )
    assert response.status_code == 202, response.content

    # Then they are a member at once, and the size follows
    assert members("carts") == {pid("v-rt")}
    assert Segment.objects.get(slug="carts").size == 1


def test_unrelated_event_leaves_membership_alone(
    write_client, celery_eager, django_capture_on_commit_callbacks
):
    make("carts", CART)
    with django_capture_on_commit_callbacks(execute=True):
        post_events(write_client, {"type": "track", "event": "viewed", "anonymous_id": "v-x"})
    assert members("carts") == set()


def test_member_leaves_a_windowed_segment_when_the_window_lapses(
    ingest, celery_eager, django_capture_on_commit_callbacks
):
    # Given a visitor who added to cart just now and is a member
    make("carts", CART)
    with django_capture_on_commit_callbacks(execute=True):
        ingest(track("add_to_cart", anonymous_id="v-sweep"))
    assert members("carts") == {pid("v-sweep")}

    # When the windows are swept an hour later / Then they stay
    later = timezone.now()
    assert services.segments_sweep_windows(now=later + timedelta(hours=1)) == 1
    assert members("carts") == {pid("v-sweep")}

    # When they are swept a day and a bit later / Then they left, and history says so
    assert services.segments_sweep_windows(now=later + timedelta(hours=25)) == 1
    assert members("carts") == set()
    point = SegmentSize.objects.filter(segment__slug="carts").first()
    assert point is not None
    assert (point.size, point.added, point.removed) == (0, 0, 1)


def test_sweep_skips_manual_segments_and_unwindowed_ones(ingest):
    make("manual-carts", CART, refresh=RefreshPolicy.MANUAL)
    make("pros", PRO)
    make("ever-carted", {"event": "add_to_cart"})
    assert services.segments_sweep_windows() == 0
    assert not SegmentSize.objects.exists()


def test_scheduled_and_manual_segments_are_not_touched_in_real_time(
    write_client, celery_eager, django_capture_on_commit_callbacks
):
    # Given three segments with the same condition and different refresh policies
    make("rt", CART, refresh=RefreshPolicy.REALTIME)
    make("sched", CART, refresh=RefreshPolicy.SCHEDULED)
    make("manual", CART, refresh=RefreshPolicy.MANUAL)

    # When a visitor adds to cart
    with django_capture_on_commit_callbacks(execute=True):
        post_events(
            write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "v-pol"}
        )

    # Then only the real-time segment has them
    assert members("rt") == {pid("v-pol")}
    assert members("sched") == set()
    assert members("manual") == set()


def test_a_burst_of_events_for_one_profile_enqueues_one_refresh(
    write_client, celery_queued, django_capture_on_commit_callbacks
):
    # Given a real-time segment, and tasks that queue instead of running
    make("carts", CART)

    # When two events for one visitor arrive in quick succession
    with django_capture_on_commit_callbacks(execute=True):
        post_events(
            write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "v-burst"}
        )
    visitor = pid("v-burst")
    assert cache.get(f"cdp:segrt:{visitor}") is not None
    with django_capture_on_commit_callbacks(execute=True):
        post_events(
            write_client, {"type": "track", "event": "add_to_cart", "anonymous_id": "v-burst"}
        )

    # Then one refresh was queued for them
    refreshes = [t for t in celery_queued if t == "segments.tasks.segments_profiles_refresh"]
    assert len(refreshes) == 1

    # When the queued refresh runs / Then they are a member and may be queued again
    services.realtime_refresh(profile_ids=[visitor])
    assert members("carts") == {visitor}
    assert cache.get(f"cdp:segrt:{visitor}") is None
