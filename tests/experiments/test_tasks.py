"""Experiment results through a real Celery worker (Redis when REDIS_URL is set, else the
in-memory broker): the beat task fans out one refresh per live experiment."""

from __future__ import annotations

from typing import Any

import pytest

from experiments import services
from experiments.models import Experiment, ResultSnapshot
from experiments.tasks import experiments_results_refresh_all
from rules import decisionlog
from rules import services as rules_services
from rules.models import Slot
from tests.conftest import post_events
from tests.segments.test_tasks import _read, _wait_for, celery_worker  # noqa: F401


def _running(key: str, slot: Slot | None) -> Experiment:
    exp = services.experiment_save(
        experiment=Experiment(key=key, name=key, slot=slot),
        actor="test",
        variants=[{"key": "welcome", "weight": 0.5}, {"key": "sale", "weight": 0.5}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


@pytest.mark.integration
@pytest.mark.usefixtures("celery_worker")
def test_the_worker_refreshes_every_live_experiments_results(write_client):
    # given: two running experiments (a slot and a flag), a draft, and visitors who buy
    slot = rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[{"key": "welcome"}, {"key": "sale"}],
        default_variant="welcome",
    )
    hero = _running("hero", slot)
    button = _running("button", None)
    draft = services.experiment_save(
        experiment=Experiment(key="draft", name="Draft", slot=slot),
        actor="test",
        variants=[{"key": "welcome", "weight": 0.5}, {"key": "sale", "weight": 0.5}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    arms: dict[str, str] = {}
    for i in range(30):
        anon = f"w-{i}"
        assert post_events(write_client, {"type": "page", "anonymous_id": anon}).status_code == 202
        body: dict[str, Any] = write_client.post(
            "/api/v1/decide",
            {"anonymous_id": anon, "slots": ["home_hero"], "flags": ["button"]},
            format="json",
        ).json()
        arms[anon] = body["decisions"]["home_hero"]["variant"]
        if i % 3 == 0:
            buy = {"type": "track", "event": "purchase", "anonymous_id": anon}
            assert post_events(write_client, buy).status_code == 202
    decisionlog.flush()

    # when
    experiments_results_refresh_all.delay()

    # then: a snapshot each for the running ones, none for the draft, with the right numbers
    def refreshed() -> bool:
        return ResultSnapshot.objects.filter(experiment__in=[hero, button]).count() == 2

    assert _wait_for(refreshed)
    assert not _read(lambda: ResultSnapshot.objects.filter(experiment=draft).exists())
    payload = _read(lambda: ResultSnapshot.objects.get(experiment=hero).payload)
    rows = {r["key"]: r for r in payload["goals"][0]["variants"]}
    buyers = {f"w-{i}" for i in range(0, 30, 3)}
    for variant in ("welcome", "sale"):
        members = [a for a, v in arms.items() if v == variant]
        assert rows[variant]["n"] == len(members)
        assert rows[variant]["conversions"] == len([a for a in members if a in buyers])
    flag_payload = _read(lambda: ResultSnapshot.objects.get(experiment=button).payload)
    assert flag_payload["exposures_total"] == 30
