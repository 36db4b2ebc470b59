"""Reads: running experiments compiled for `/decide`, and profiles' sticky exposures."""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Max, Q

from experiments.hashing import bucket_ranges
from experiments.models import Experiment, Exposure, ResultSnapshot, Status
from rules.decide import flag_slot_key


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
    holdout: CompiledExperiment | None = None  # the running global personalization holdout


def _compile(exp: Experiment, slot_content: dict[str, Any]) -> CompiledExperiment:
    variants = tuple(
        CompiledVariant(v.key, v.weight, v.content or slot_content.get(v.key, {}))
        for v in exp.variants.all()
    )
    return CompiledExperiment(
        key=exp.key,
        name=exp.name,
        slot=exp.slot.key if exp.slot else "",
        seed=exp.hash_seed,
        audience=exp.audience,
        traffic=exp.traffic,
        namespace=exp.namespace,
        namespace_range=(exp.namespace_start, exp.namespace_end),
        variants=variants,
        ranges=tuple(bucket_ranges([v.weight for v in variants], exp.traffic)),
    )


def experiments_running_load() -> ExperimentsState:
    """Running experiments on slots (each variant's content: its own, else the slot
    variant of the same key) and flags, and the running global holdout."""
    running = (
        Experiment.objects.filter(status=Status.RUNNING)
        .select_related("slot")
        .prefetch_related("variants", "slot__variants")
        .order_by("created_at", "pk")
    )
    by_slot: dict[str, list[CompiledExperiment]] = defaultdict(list)
    holdout = None
    for exp in running:
        if exp.holdout:
            holdout = holdout or _compile(exp, {})
            continue
        if exp.slot is None:  # a flag: asked for by key in `/decide`'s "flags"
            by_slot[flag_slot_key(exp.key)].append(_compile(exp, {}))
            continue
        slot_content = {v.key: v.content() for v in exp.slot.variants.all()}
        by_slot[exp.slot.key].append(_compile(exp, slot_content))
    return ExperimentsState({k: tuple(v) for k, v in by_slot.items()}, holdout)


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
    stopped ones until `stopped_within` — or their widest goal window, if longer — has
    passed since the stop."""
    rows = (
        Experiment.objects.filter(
            Q(status__in=[Status.RUNNING, Status.PAUSED]) | Q(status=Status.STOPPED)
        )
        .annotate(widest=Max("goals__window_seconds"))
        .order_by("pk")
        .values_list("pk", "status", "stopped_at", "widest")
    )
    return [
        pk
        for pk, status, stopped_at, widest in rows
        if status != Status.STOPPED
        or (
            stopped_at is not None
            and now - stopped_at <= max(stopped_within, timedelta(seconds=widest or 0))
        )
    ]
