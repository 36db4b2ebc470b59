"""The global personalization holdout: a share of visitors who only ever get defaults,
measured against everyone else with the experiments' own results."""

from __future__ import annotations

from typing import Any

import pytest

from experiments import services
from experiments.hashing import hash_v2
from experiments.models import Experiment, Exposure
from rules import decisionlog
from rules import services as rules_services
from rules.models import Rule, Slot
from tests.conftest import post_events

GOALS = [{"event": "purchase", "kind": "conversion", "primary": True}]


@pytest.fixture
def slots(db: Any) -> tuple[Slot, Slot]:
    hero = rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[{"key": "welcome", "title": "Welcome"}, {"key": "promo", "title": "Promo"}],
        default_variant="welcome",
    )
    strip = rules_services.slot_save(
        slot=Slot(key="promo_strip"),
        actor="test",
        variants=[{"key": "plain", "title": "Plain"}, {"key": "deal", "title": "Deal"}],
        default_variant="plain",
    )
    # a rule that matches everyone: without the holdout, nobody sees a default
    for slot, variant in ((hero, "promo"), (strip, "deal")):
        rules_services.rule_save(
            rule=Rule(
                key=f"all-{slot.key}",
                slot=slot,
                name=f"Everyone {slot.key}",
                condition={"all": []},
                variant=slot.variants.get(key=variant),
            ),
            actor="test",
        )
    return hero, strip


def holdout(percent: float) -> Experiment:
    exp = services.experiment_save(
        experiment=Experiment(key="personalization-holdout", name="Holdout", holdout=True),
        actor="test",
        variants=[
            {"key": "holdout", "weight": percent},
            {"key": "personalized", "weight": 1 - percent},
        ],
        goals=GOALS,
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


def ask(client: Any, anon: str) -> dict[str, Any]:
    response = client.post(
        "/api/v1/decide",
        {"anonymous_id": anon, "slots": ["home_hero", "promo_strip"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()["decisions"]


@pytest.mark.django_db
def test_held_out_visitors_only_get_defaults_and_the_rest_are_tagged(write_client, slots):
    # given: a 20% holdout and rules that match everyone
    holdout(0.2)
    held = 0
    for i in range(200):
        anon = f"h-{i}"
        # when
        decisions = ask(write_client, anon)
        # then: the hash of the id decides the arm, for every slot alike
        in_holdout = hash_v2("personalization-holdout", anon) < 0.2
        hero, strip = decisions["home_hero"], decisions["promo_strip"]
        arm = "holdout" if in_holdout else "personalized"
        for d in (hero, strip):
            assert d["experiment"] == {"key": "personalization-holdout", "variant": arm}
        if in_holdout:
            held += 1
            assert (hero["variant"], strip["variant"]) == ("welcome", "plain")
            assert hero["source"] == strip["source"] == "default"
            assert "global personalization holdout" in hero["reason"]
        else:
            assert (hero["variant"], strip["variant"]) == ("promo", "deal")
            assert hero["source"] == "rule"
    assert 20 <= held <= 60  # about 20% of 200


@pytest.mark.django_db
def test_a_held_out_visitor_stays_held_out_when_the_share_changes(write_client, slots):
    # given: a visitor (with a profile) exposed in the holdout arm
    exp = holdout(0.5)
    anon = next(f"s-{i}" for i in range(100) if hash_v2("personalization-holdout", f"s-{i}") < 0.5)
    assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
    assert ask(write_client, anon)["home_hero"]["source"] == "default"
    decisionlog.flush()
    assert Exposure.objects.get(experiment=exp).variant == "holdout"
    # when: the holdout shrinks to 1%
    services.experiment_save(
        experiment=exp,
        actor="test",
        variants=[{"key": "holdout", "weight": 0.01}, {"key": "personalized", "weight": 0.99}],
    )
    # then: still held out (sticky), and still logged once
    assert ask(write_client, anon)["home_hero"]["source"] == "default"
    decisionlog.flush()
    assert Exposure.objects.filter(experiment=exp).count() == 1


@pytest.mark.django_db
def test_the_uplift_of_personalization_is_measured_like_an_experiment(write_client, slots):
    # given: 100 visitors with profiles; only the personalized ones buy
    exp = holdout(0.3)
    arms = {}
    for i in range(100):
        anon = f"u-{i}"
        assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
        arms[anon] = ask(write_client, anon)["home_hero"]["experiment"]["variant"]
    decisionlog.flush()
    buyers = [a for a in arms if arms[a] == "personalized"][::2]
    for anon in buyers:
        body = {"type": "track", "event": "purchase", "anonymous_id": anon}
        assert post_events(write_client, body).status_code == 202
    # when
    payload = services.results_refresh(experiment=exp).payload
    # then: the holdout is the control; personalization's lift is its conversion rate
    assert payload["control"] == "holdout"
    rows = {r["key"]: r for r in payload["goals"][0]["variants"]}
    n_holdout = sum(1 for v in arms.values() if v == "holdout")
    assert rows["holdout"]["n"] == n_holdout
    assert rows["holdout"]["conversions"] == 0
    assert rows["personalized"]["n"] == 100 - n_holdout
    assert rows["personalized"]["conversions"] == len(buyers)
    assert rows["personalized"]["vs_control"]["difference"] == pytest.approx(
        len(buyers) / (100 - n_holdout)
    )


@pytest.mark.django_db
def test_without_personalization_consent_nobody_is_counted_in_either_arm(write_client, slots):
    # given
    exp = holdout(0.5)
    anon = "no-consent"
    assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
    response = write_client.post(
        "/api/v1/consent",
        {"anonymous_id": anon, "purposes": {"personalization": False}, "policy_version": "1"},
        format="json",
    )
    assert response.status_code == 201, response.content
    # when
    decision = ask(write_client, anon)["home_hero"]
    decisionlog.flush()
    # then: a default for want of consent, not an arm of the holdout
    assert "experiment" not in decision
    assert not Exposure.objects.filter(experiment=exp).exists()
