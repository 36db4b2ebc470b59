"""Experiments in `/decide`: who enters, which variant, stickiness, exposures once per
profile, and the configuration errors a marketer can make."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from cdp.errors import Conflict, ValidationFailed
from experiments import services
from experiments.hashing import bucket_ranges, choose_variant, hash_v2
from experiments.models import Experiment, Exposure, Variant
from profiles.models import Identity
from rules import decisionlog
from rules import services as rules_services
from rules.models import Slot
from tests.conftest import post_events

URL = "/api/v1/decide"
GOALS = [{"event": "purchase", "kind": "conversion"}]


def running(slot: Slot, key: str = "hero-test", **fields: Any) -> Experiment:
    variants = fields.pop(
        "variants",
        [
            {"key": "welcome", "weight": 0.5},
            {"key": "sale", "weight": 0.5, "content": {"title": "Big sale"}},
        ],
    )
    exp = services.experiment_save(
        experiment=Experiment(key=key, name=key.title(), slot=slot, **fields),
        actor="test",
        variants=variants,
        goals=fields.pop("goals", GOALS),
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


def ask(client: Any, anon: str) -> dict[str, Any]:
    response = client.post(URL, {"anonymous_id": anon, "slots": ["home_hero"]}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["decisions"]["home_hero"]


@pytest.mark.django_db
def test_a_visitor_gets_the_variant_growthbooks_hash_gives(write_client, hero):
    running(hero)
    for anon in ("a-1", "a-2", "a-3", "a-4"):
        decision = ask(write_client, anon)
        expected = ["welcome", "sale"][
            choose_variant(hash_v2("hero-test", anon), bucket_ranges([0.5, 0.5]))
        ]
        assert decision["source"] == "experiment"
        assert decision["experiment"] == {"key": "hero-test", "variant": expected}
        assert decision["variant"] == expected
        assert decision["reason"].startswith(f"experiment 'Hero-Test': variant {expected}")
    # the variant's own content wins; without one, the slot variant of the same key
    contents = {ask(write_client, f"c-{i}")["variant"]: None for i in range(20)}
    assert set(contents) == {"welcome", "sale"}


@pytest.mark.django_db
def test_assignment_is_close_to_the_weights(write_client, hero):
    exp = running(
        hero, variants=[{"key": "welcome", "weight": 0.8}, {"key": "sale", "weight": 0.2}]
    )
    del exp
    counts = Counter(ask(write_client, f"u-{i}")["variant"] for i in range(300))
    assert 200 <= counts["welcome"] <= 280


@pytest.mark.django_db
def test_traffic_allocation_and_audience_decide_who_enters(write_client, hero):
    running(hero, traffic=0.3, audience={"context": "device", "op": "eq", "value": "mobile"})
    # outside the audience: the slot's rules (here: the default)
    desktop = write_client.post(
        URL,
        {"anonymous_id": "d-1", "slots": ["home_hero"], "context": {"device": "desktop"}},
        format="json",
    ).json()["decisions"]["home_hero"]
    assert desktop["source"] == "default"
    entered = 0
    for i in range(200):
        d = write_client.post(
            URL,
            {"anonymous_id": f"m-{i}", "slots": ["home_hero"], "context": {"device": "mobile"}},
            format="json",
        ).json()["decisions"]["home_hero"]
        entered += d["source"] == "experiment"
    assert 35 <= entered <= 85  # ~30 %


@pytest.mark.django_db
def test_exposure_is_logged_once_and_the_first_variant_sticks_when_weights_change(
    write_client, hero, django_capture_on_commit_callbacks
):
    exp = running(hero)
    post_events(write_client, {"type": "page", "anonymous_id": "stick"})
    first = ask(write_client, "stick")["variant"]
    ask(write_client, "stick")
    decisionlog.flush()
    pid = Identity.objects.get(value="stick").profile_id
    assert list(Exposure.objects.filter(profile_id=pid).values_list("variant", flat=True)) == [
        first
    ]

    # When the weights move everyone to the other variant
    other = "sale" if first == "welcome" else "welcome"
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_save(
            experiment=exp,
            actor="test",
            variants=[
                {"key": "welcome", "weight": 1.0 if other == "welcome" else 0.0},
                {"key": "sale", "weight": 1.0 if other == "sale" else 0.0},
            ],
        )
    # Then the exposed visitor keeps their variant; a new one gets the new weights
    assert ask(write_client, "stick")["variant"] == first
    assert ask(write_client, "newcomer")["variant"] == other


@pytest.mark.django_db
def test_a_merge_keeps_the_identified_profiles_assignment(write_client, secret_client, hero):
    exp = running(hero)
    post_events(secret_client, {"type": "identify", "user_id": "buyer"})
    post_events(write_client, {"type": "page", "anonymous_id": "buyer-phone"})
    buyer = Identity.objects.get(value="buyer").profile_id
    phone = Identity.objects.get(value="buyer-phone").profile_id
    from django.utils import timezone

    Exposure.objects.create(
        experiment=exp, profile_id=buyer, variant="sale", exposed_at=timezone.now()
    )
    Exposure.objects.create(
        experiment=exp, profile_id=phone, variant="welcome", exposed_at=timezone.now()
    )

    post_events(
        secret_client, {"type": "identify", "anonymous_id": "buyer-phone", "user_id": "buyer"}
    )

    assert list(Exposure.objects.filter(experiment=exp).values_list("profile_id", "variant")) == [
        (buyer, "sale")
    ]


@pytest.mark.django_db
def test_multivariate_factors_make_every_combination(hero):
    exp = services.experiment_save(
        experiment=Experiment(
            key="mvt",
            name="MVT",
            slot=hero,
            factors=[
                {"name": "color", "levels": ["red", "blue"]},
                {"name": "cta", "levels": ["buy", "go", "shop"]},
            ],
        ),
        actor="test",
        goals=GOALS,
    )
    variants = list(exp.variants.values_list("key", "weight"))
    assert [k for k, _ in variants] == [
        "red-buy",
        "red-go",
        "red-shop",
        "blue-buy",
        "blue-go",
        "blue-shop",
    ]
    assert all(abs(w - 1 / 6) < 1e-12 for _, w in variants)
    assert Variant.objects.get(experiment=exp, key="blue-go").content == {
        "factors": {"color": "blue", "cta": "go"}
    }


@pytest.mark.django_db
def test_namespaces_make_experiments_mutually_exclusive(write_client, hero):
    running(hero, key="left", namespace="hero", namespace_start=0.0, namespace_end=0.5)
    right_slot = rules_services.slot_save(
        slot=Slot(key="side"), actor="t", variants=[{"key": "a"}, {"key": "b"}], default_variant="a"
    )
    running(
        right_slot,
        key="right",
        namespace="hero",
        namespace_start=0.5,
        namespace_end=1.0,
        variants=[{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.5}],
    )
    both = 0
    for i in range(100):
        r = write_client.post(
            URL, {"anonymous_id": f"ns-{i}", "slots": ["home_hero", "side"]}, format="json"
        ).json()["decisions"]
        both += r["home_hero"]["source"] == "experiment" and r["side"]["source"] == "experiment"
    assert both == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        (
            {"variants": [{"key": "a", "weight": 0.5}, {"key": "b", "weight": 0.4}]},
            "variants",
            "sum to 1",
        ),
        ({"variants": [{"key": "a", "weight": 1.0}]}, "variants", "at least two"),
        ({"goals": [{"event": "never_sent"}]}, "goals[0].event", "unknown event 'never_sent'"),
        (
            {"goals": [{"event": "purchase", "kind": "revenue"}]},
            "goals[0].property",
            "numeric property",
        ),
        ({"traffic": 1.5}, "traffic", "between 0 and 1"),
        (
            {"goals": [{"event": "purchase", "kind": "revenue", "property": 'rev"x'}]},
            "goals[0].property",
            "a property name",
        ),
        ({"audience": {"trait": "plan", "op": "nope", "value": 1}}, "audience", "op"),
    ],
)
def test_bad_configurations_are_refused_naming_the_field(hero, fields, field, reason):
    base: dict[str, Any] = {
        "variants": [{"key": "welcome", "weight": 0.5}, {"key": "sale", "weight": 0.5}],
        "goals": GOALS,
    }
    base.update(fields)
    variants, goals = base.pop("variants"), base.pop("goals")
    with pytest.raises(ValidationFailed) as caught:
        services.experiment_save(
            experiment=Experiment(key="bad", name="Bad", slot=hero, **base),
            actor="t",
            variants=variants,
            goals=goals,
        )
    assert field in caught.value.details
    assert reason in caught.value.message


@pytest.mark.django_db
def test_overlapping_namespaces_are_refused(hero):
    running(hero, key="first", namespace="hero", namespace_start=0.0, namespace_end=0.6)
    with pytest.raises(ValidationFailed) as caught:
        running(hero, key="second", namespace="hero", namespace_start=0.5, namespace_end=1.0)
    assert "overlaps experiment first" in caught.value.message


@pytest.mark.django_db
def test_a_stopped_experiment_cannot_be_started_again(hero):
    exp = running(hero)
    services.experiment_transition(experiment=exp, move="stop", actor="t")
    with pytest.raises(Conflict):
        services.experiment_transition(experiment=exp, move="start", actor="t")


@pytest.mark.django_db
def test_an_audience_on_events_enters_the_visitors_who_did_them(write_client, hero):
    # given: an experiment for visitors who added to cart this week, and no rule at all
    running(hero, audience={"event": "add_to_cart", "within": "7d"})
    buyer, browser = "carting", "just-looking"
    body = {"type": "track", "event": "add_to_cart", "anonymous_id": buyer}
    assert post_events(write_client, body).status_code == 202
    assert post_events(write_client, {"type": "page", "anonymous_id": browser}).status_code == 202
    # when / then: only the one who added to cart enters
    assert ask(write_client, buyer)["source"] == "experiment"
    assert ask(write_client, browser)["source"] == "default"


@pytest.mark.django_db
def test_a_segment_in_a_live_experiments_audience_cannot_be_deleted(secret_client, hero):
    # given
    from segments.models import Segment

    Segment.objects.create(slug="carts", name="Carts", condition={"trait": "x", "op": "exists"})
    exp = running(hero, audience={"segment": "carts"})
    # when
    response = secret_client.delete("/api/v1/segments/carts")
    # then: refused as for a rule that uses it
    assert response.status_code == 400, response.content
    assert "experiment hero-test" in response.json()["error"]["message"]
    # once the experiment is stopped, it can go
    services.experiment_transition(experiment=exp, move="stop", actor="t")
    assert secret_client.delete("/api/v1/segments/carts").status_code == 204


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"seed": "another-seed"}, "seed"),
        ({"namespace": "ns", "namespace_start": 0.0, "namespace_end": 0.5}, "namespace"),
    ],
)
def test_what_places_a_visitor_cannot_change_once_started(hero, change, field):
    # given
    exp = running(hero)
    # when
    for name, value in change.items():
        setattr(exp, name, value)
    with pytest.raises(ValidationFailed) as caught:
        services.experiment_save(experiment=exp, actor="t")
    # then
    assert field in caught.value.details
    assert Experiment.objects.get(pk=exp.pk).seed == ""


@pytest.mark.django_db
def test_a_started_experiment_may_change_its_traffic_and_name(hero):
    exp = running(hero)
    exp.traffic, exp.name = 0.5, "Renamed"
    services.experiment_save(experiment=exp, actor="t")
    assert Experiment.objects.get(pk=exp.pk).traffic == 0.5
