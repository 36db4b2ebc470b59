"""Exposures drawn from the decision log: both arms of the global holdout, stickiness the
very next request, and decisions still queued when a profile was merged or erased."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from experiments import services
from experiments.hashing import hash_v2
from experiments.models import Experiment, Exposure
from profiles.models import Identity, Profile
from rules import decisionlog
from rules.models import Slot
from tests.conftest import post_events

GOALS = [{"event": "purchase", "kind": "conversion", "primary": True}]
HALF = [{"key": "welcome", "weight": 0.5}, {"key": "sale", "weight": 0.5}]


def start(key: str, *, slot: Slot | None = None, holdout: bool = False, variants: Any = HALF):
    exp = services.experiment_save(
        experiment=Experiment(key=key, name=key, slot=slot, holdout=holdout),
        actor="test",
        variants=variants,
        goals=GOALS,
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


def decide(client: Any, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/decide", {"slots": ["home_hero"], **body}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["decisions"]["home_hero"]


@pytest.mark.django_db
def test_both_holdout_arms_are_exposed_when_an_experiment_answers(write_client, hero):
    # given: a 50% holdout and an experiment that answers every personalized visitor
    holdout = start(
        "ph",
        holdout=True,
        variants=[{"key": "holdout", "weight": 0.5}, {"key": "personalized", "weight": 0.5}],
    )
    start("hero-test", slot=hero)
    # when: 200 visitors with profiles ask
    for i in range(200):
        anon = f"v-{i}"
        assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
        answer = decide(write_client, anonymous_id=anon)
        held = hash_v2("ph", anon) < 0.5
        assert answer["source"] == ("default" if held else "experiment")
    decisionlog.flush()
    # then: both arms are exposed, in the proportions the hash gives, and no SRM
    arms = Counter(Exposure.objects.filter(experiment=holdout).values_list("variant", flat=True))
    expected = Counter(
        "holdout" if hash_v2("ph", f"v-{i}") < 0.5 else "personalized" for i in range(200)
    )
    assert arms == expected
    assert services.results_refresh(experiment=holdout).payload["srm"]["mismatch"] is False


@pytest.mark.django_db
def test_the_assignment_sticks_on_the_very_next_request_even_when_the_id_changes(
    write_client, hero, django_capture_on_commit_callbacks
):
    # given: an anonymous visitor exposed to a variant …
    start("hero-test", slot=hero)
    anon = "sticky-anon"
    assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
    first = decide(write_client, anonymous_id=anon)["variant"]
    with django_capture_on_commit_callbacks(execute=True):
        decisionlog.flush()
    # … whose user id hashes to the other variant
    user = next(
        f"u-{i}"
        for i in range(200)
        if (hash_v2("hero-test", f"u-{i}") < 0.5) != (first == "welcome")
    )
    # when: the next request names the user (no event in between)
    answer = decide(write_client, anonymous_id=anon, user_id=user)
    # then: the stored exposure wins over the new hash
    assert answer["variant"] == first
    assert "sticky" in answer["reason"]


@pytest.mark.django_db
def test_a_decision_queued_before_a_merge_counts_for_the_surviving_profile(
    write_client, secret_client, hero
):
    # given: a phone's decision still in the log's queue …
    exp = start("hero-test", slot=hero)
    assert post_events(write_client, {"type": "page", "anonymous_id": "phone"}).status_code == 202
    decide(write_client, anonymous_id="phone")
    phone = Identity.objects.get(value="phone").profile_id
    # … when the person logs in on their laptop, already exposed, and the phone merges in
    assert post_events(write_client, {"type": "page", "user_id": "ann"}).status_code == 202
    decide(write_client, user_id="ann")
    body = {"type": "identify", "anonymous_id": "phone", "user_id": "ann"}
    assert post_events(secret_client, body).status_code == 202
    ann = Identity.objects.get(value="ann").profile_id
    assert Profile.objects.get(pk=phone).merged_into_id == ann
    # when the queue is written
    decisionlog.flush()
    # then: one person, one exposure, on the surviving profile
    assert list(Exposure.objects.filter(experiment=exp).values_list("profile_id", flat=True)) == [
        ann
    ]


@pytest.mark.django_db
def test_a_decision_queued_before_an_erasure_exposes_nobody(write_client, hero):
    # given: a decision in the queue for a profile that is then erased
    exp = start("hero-test", slot=hero)
    assert post_events(write_client, {"type": "page", "anonymous_id": "gone"}).status_code == 202
    decide(write_client, anonymous_id="gone")
    Profile.objects.filter(identities__value="gone").delete()
    # when
    decisionlog.flush()
    # then
    assert not Exposure.objects.filter(experiment=exp).exists()
