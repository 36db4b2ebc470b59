"""Experiments without a slot: feature flags asked for by key in `/decide`."""

from __future__ import annotations

from typing import Any

import pytest

from experiments import services
from experiments.hashing import bucket_ranges, choose_variant, hash_v2
from experiments.models import Experiment, Exposure
from rules import decisionlog
from tests.conftest import post_events

URL = "/api/v1/decide"


def flag(key: str = "checkout-button", **fields: Any) -> Experiment:
    exp = services.experiment_save(
        experiment=Experiment(key=key, name="Checkout button", **fields),
        actor="test",
        variants=[
            {"key": "grey", "weight": 0.5, "content": {"color": "grey"}},
            {"key": "green", "weight": 0.5, "content": {"color": "green"}},
        ],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


@pytest.mark.django_db
def test_a_flag_answers_the_variant_growthbooks_hash_gives(write_client):
    # given
    flag()
    ranges = bucket_ranges([0.5, 0.5])
    for i in range(30):
        anon = f"f-{i}"
        # when
        response = write_client.post(
            URL, {"anonymous_id": anon, "flags": ["checkout-button"]}, format="json"
        )
        # then
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["decisions"] == {}
        answer = body["flags"]["checkout-button"]
        expected = ["grey", "green"][choose_variant(hash_v2("checkout-button", anon), ranges)]
        assert answer["variant"] == expected
        assert answer["content"] == {"color": expected}
        assert answer["source"] == "experiment"
        assert answer["experiment"] == {"key": "checkout-button", "variant": expected}


@pytest.mark.django_db
def test_flags_and_slots_together_and_the_exposure_is_logged_once(write_client):
    # given: a visitor with a profile
    exp = flag()
    from rules import services as rules_services
    from rules.models import Slot

    rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[{"key": "welcome", "title": "Welcome"}],
        default_variant="welcome",
    )
    assert post_events(write_client, {"type": "page", "anonymous_id": "p-1"}).status_code == 202
    # when: asked twice
    for _ in range(2):
        response = write_client.post(
            URL,
            {"anonymous_id": "p-1", "slots": ["home_hero"], "flags": ["checkout-button"]},
            format="json",
        )
        assert response.status_code == 200, response.content
    decisionlog.flush()
    # then
    body = response.json()
    assert body["decisions"]["home_hero"]["variant"] == "welcome"
    exposure = Exposure.objects.get(experiment=exp)
    assert exposure.variant == body["flags"]["checkout-button"]["variant"]


@pytest.mark.django_db
def test_an_unknown_or_stopped_flag_answers_no_variant(write_client):
    # given
    exp = flag()
    services.experiment_transition(experiment=exp, move="stop", actor="test")
    # when
    response = write_client.post(
        URL, {"anonymous_id": "x", "flags": ["checkout-button", "no-such-flag"]}, format="json"
    )
    # then
    assert response.status_code == 200, response.content
    for key in ("checkout-button", "no-such-flag"):
        answer = response.json()["flags"][key]
        assert answer["variant"] is None
        assert answer["source"] == "default"
        assert f"not in a running experiment '{key}'" in answer["reason"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"anonymous_id": "x"}, "slots"),
        ({"anonymous_id": "x", "slots": [], "flags": []}, "slots"),
        ({"anonymous_id": "x", "flags": [""]}, "flags.0"),
        ({"anonymous_id": "x", "flags": "checkout-button"}, "flags"),
        ({"anonymous_id": "x", "flags": [f"f{i}" for i in range(21)]}, "flags"),
    ],
)
def test_bad_flag_requests_are_refused_naming_the_field(write_client, body, field):
    response = write_client.post(URL, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]


@pytest.mark.django_db
def test_with_a_holdout_running_a_flag_outside_its_experiment_names_no_experiment(write_client):
    # given: a personalized visitor (a 1% holdout) and a flag that does not exist
    holdout = services.experiment_save(
        experiment=Experiment(key="ph", name="Holdout", holdout=True),
        actor="test",
        variants=[{"key": "holdout", "weight": 0.01}, {"key": "personalized", "weight": 0.99}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    services.experiment_transition(experiment=holdout, move="start", actor="test")
    anon = next(f"f-{i}" for i in range(100) if hash_v2("ph", f"f-{i}") >= 0.01)
    # when
    response = write_client.post(URL, {"anonymous_id": anon, "flags": ["nope"]}, format="json")
    # then
    answer = response.json()["flags"]["nope"]
    assert answer["variant"] is None
    assert "experiment" not in answer
    assert "not in a running experiment 'nope'" in answer["reason"]
