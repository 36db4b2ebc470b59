"""Reads: running experiments compiled for `/decide`, and profiles' sticky exposures."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q

from experiments.hashing import bucket_ranges
from experiments.models import Experiment, Exposure, ResultSnapshot, Status


@dataclass(frozen=True)
class CompiledVariant:
    key: str
    weight: float
    content: dict[str, Any]


@dataclass(frozen=True)
class CompiledExperiment:
    key: str
    name: str
    slot: str
    seed: str
    audience: Any
    traffic: float
    namespace: str
    namespace_range: tuple[float, float]
    variants: tuple[CompiledVariant, ...]
    ranges: tuple[tuple[float, float], ...]

    def variant(self, key: str) -> CompiledVariant | None:
        return next((v for v in self.variants if v.key == key), None)


@dataclass(frozen=True)
class ExperimentsState:
    by_slot: dict[str, tuple[CompiledExperiment, ...]]


def experiments_running_load() -> ExperimentsState:
    """Running experiments on slots, with each variant's content (its own, else the slot
    variant of the same key)."""
    running = (
        Experiment.objects.filter(status=Status.RUNNING, slot__isnull=False)
        .select_related("slot")
        .prefetch_related("variants", "slot__variants")
        .order_by("created_at", "pk")
    )
    by_slot: dict[str, list[CompiledExperiment]] = defaultdict(list)
    for exp in running:
        assert exp.slot is not None
        slot_content = {v.key: v.content() for v in exp.slot.variants.all()}
        variants = tuple(
            CompiledVariant(v.key, v.weight, v.content or slot_content.get(v.key, {}))
            for v in exp.variants.all()
        )
        by_slot[exp.slot.key].append(
            CompiledExperiment(
                key=exp.key,
                name=exp.name,
                slot=exp.slot.key,
                seed=exp.hash_seed,
                audience=exp.audience,
                traffic=exp.traffic,
                namespace=exp.namespace,
                namespace_range=(exp.namespace_start, exp.namespace_end),
                variants=variants,
                ranges=tuple(bucket_ranges([v.weight for v in variants], exp.traffic)),
            )
        )
    return ExperimentsState({k: tuple(v) for k, v in by_slot.items()})


def exposures_of(profile_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
    """Per profile: experiment key → the variant it was first exposed to (sticky)."""
    out: dict[uuid.UUID, dict[str, str]] = defaultdict(dict)
    for pid, key, variant in Exposure.objects.filter(
        profile_id__in=profile_ids, experiment__status__in=[Status.RUNNING, Status.PAUSED]
    ).values_list("profile_id", "experiment__key", "variant"):
        out[pid][key] = variant
    return dict(out)


def results_latest(*, experiment: Experiment) -> ResultSnapshot | None:
    """The newest computed results of an experiment (None before the first run)."""
    return experiment.results.order_by("-computed_at", "-pk").first()


def experiments_to_refresh(*, now: datetime, stopped_within: timedelta) -> list[int]:
    """Experiments whose results move: running, paused (late conversions still land), and
    those stopped less than `stopped_within` ago."""
    return list(
        Experiment.objects.filter(
            Q(status__in=[Status.RUNNING, Status.PAUSED])
            | Q(status=Status.STOPPED, stopped_at__gte=now - stopped_within)
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
