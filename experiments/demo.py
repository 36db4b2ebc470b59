"""Demo experiments: an A/B test on the promo strip with results to look at, and the
global personalization holdout as a draft (starting it holds 5% of visitors out)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from experiments.hashing import bucket_ranges, choose_variant, hash_v2
from experiments.models import Experiment, Exposure, Status
from experiments.services import experiment_save, experiment_transition, results_refresh
from profiles.models import Identity, Profile
from rules.models import Slot

DEMO_AB = "promo-strip-copy"
DEMO_HOLDOUT = "personalization-holdout"


def demo_experiments_ensure(*, now: datetime) -> list[Experiment]:
    """Create the demo experiments once; returns those created now. The A/B test's demo
    visitors are exposed as if the test had run since their first visit (assigned by
    the same hash `/decide` uses), so its results page has numbers from the start."""
    created: list[Experiment] = []
    slot = Slot.objects.filter(key="promo_strip").first()
    if slot is not None and not Experiment.objects.filter(key=DEMO_AB).exists():
        exp = experiment_save(
            experiment=Experiment(
                key=DEMO_AB,
                name="Promo strip: shipping or newsletter?",
                hypothesis="Offering 10% off for the newsletter sells more than free shipping.",
                slot=slot,
                minimum_detectable_effect=0.2,
            ),
            actor="seed_demo",
            variants=[
                {"key": "free-shipping", "weight": 0.5},
                {"key": "newsletter", "weight": 0.5},
            ],
            goals=[
                {"event": "purchase", "kind": "conversion", "primary": True},
                {"event": "purchase", "kind": "revenue", "property": "revenue"},
                {"event": "add_to_cart", "kind": "conversion", "window_seconds": 86400},
            ],
        )
        exp = experiment_transition(experiment=exp, move="start", actor="seed_demo")
        started = (
            Profile.objects.exclude(first_seen_at=None)
            .order_by("first_seen_at")
            .values_list("first_seen_at", flat=True)
            .first()
        ) or now
        Experiment.objects.filter(pk=exp.pk).update(started_at=started)
        _expose_demo_visitors(exp)
        results_refresh(experiment=exp, now=now)
        created.append(exp)
    if not Experiment.objects.filter(key=DEMO_HOLDOUT).exists():
        created.append(
            experiment_save(
                experiment=Experiment(
                    key=DEMO_HOLDOUT,
                    name="Global personalization holdout",
                    hypothesis="Personalization as a whole sells more than defaults for everyone.",
                    holdout=True,
                ),
                actor="seed_demo",
                variants=[
                    {"key": "holdout", "weight": 0.05},
                    {"key": "personalized", "weight": 0.95},
                ],
                goals=[{"event": "purchase", "kind": "conversion", "primary": True}],
            )
        )
    return created


def _expose_demo_visitors(exp: Experiment) -> None:
    variants = list(exp.variants.order_by("index"))
    ranges = bucket_ranges([v.weight for v in variants], exp.traffic)
    units = {
        pid: value
        for pid, kind, value in Identity.objects.filter(
            kind__in=["anonymous_id", "user_id"], profile__merged_into=None
        )
        .order_by("kind")  # anonymous_id before user_id: the user id wins, as in /decide
        .values_list("profile_id", "kind", "value")
    }
    first_seen: dict[Any, datetime] = {
        pk: seen
        for pk, seen in Profile.objects.filter(pk__in=units).values_list("pk", "first_seen_at")
        if seen is not None
    }
    rows = []
    for pid, unit in units.items():
        index = choose_variant(hash_v2(exp.hash_seed, unit), ranges)
        if index >= 0 and pid in first_seen:
            rows.append(
                Exposure(
                    experiment=exp,
                    profile_id=pid,
                    variant=variants[index].key,
                    exposed_at=first_seen[pid],
                )
            )
    Exposure.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    assert exp.status == Status.RUNNING
