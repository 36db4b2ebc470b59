"""Writes: experiments (validated, audited; every change makes `/decide` reload),
their lifecycle, and exposures (from the decision log)."""

from __future__ import annotations

import itertools
import math
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from cdp.audit import audit_record
from cdp.errors import Conflict, ValidationFailed
from experiments.models import (
    Experiment,
    Exposure,
    Goal,
    GoalKind,
    ResultSnapshot,
    Status,
    Variant,
)
from profiles.models import Event, EventSchema, Profile
from rules.services import config_changed, html_sanitize, snapshots_invalidate
from segments.conditions import language
from segments.services import condition_check

WEIGHT_TOLERANCE = 1e-6
KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
PROPERTY_KEY = language.KEY  # the condition language's property names
MAX_VARIANTS = 100
DEFAULT_WINDOW_SECONDS = 7 * 86400
# Goal windows are whole minutes (the condition language's `within` has no seconds).
MAX_WINDOW_SECONDS = 365 * 86400
HOLDOUT_VARIANTS = frozenset({"holdout", "personalized"})


def _fail(field: str, reason: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {reason}", details={field: [reason]})


def variants_from_factors(factors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Multivariate: every combination of the factors' levels is a variant (equal
    weights); the first combination (every factor's first level) is the control."""
    if not factors:
        return []
    for i, f in enumerate(factors):
        if (
            not isinstance(f, dict)
            or not f.get("name")
            or not isinstance(f.get("levels"), list)
            or len(f["levels"]) < 2
        ):
            raise _fail(f"factors[{i}]", 'must be {"name": …, "levels": [at least two]}')
    if math.prod(len(f["levels"]) for f in factors) > MAX_VARIANTS:
        raise _fail("factors", f"at most {MAX_VARIANTS} combinations of levels")
    combos = list(itertools.product(*[[str(level) for level in f["levels"]] for f in factors]))
    weight = 1.0 / len(combos)
    return [
        {
            "key": "-".join(c),
            "weight": weight,
            "content": {"factors": {f["name"]: level for f, level in zip(factors, c, strict=True)}},
        }
        for c in combos
    ]


def _check_variants(variants: list[dict[str, Any]]) -> None:
    if len(variants) < 2:
        raise _fail(
            "variants", "an experiment needs at least two variants (the first is the control)"
        )
    keys = [str(v.get("key") or "") for v in variants]
    for i, key in enumerate(keys):
        if not KEY.match(key):
            raise _fail(f"variants[{i}].key", "letters, digits, - and _ (up to 100)")
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise _fail("variants", f"duplicate key(s) {', '.join(map(str, dupes))}")
    weights = [v.get("weight") for v in variants]
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
            raise _fail(f"variants[{i}].weight", "must be a number ≥ 0")
    total = math.fsum(float(w) for w in weights)  # type: ignore[arg-type]
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise _fail("variants", f"weights must sum to 1 (they sum to {total:g})")


def _known_events() -> set[str]:
    return set(EventSchema.objects.values_list("event", flat=True)) | set(
        settings.CDP["PURCHASE_EVENTS"]
    )


def _check_goals(goals: list[dict[str, Any]]) -> None:
    if not goals:
        raise _fail("goals", "at least one goal (the primary metric)")
    known = _known_events()
    for i, g in enumerate(goals):
        name = g.get("event")
        if not isinstance(name, str) or not name:
            raise _fail(f"goals[{i}].event", "required")
        if name not in known and not Event.objects.filter(event=name).exists():
            raise _fail(
                f"goals[{i}].event",
                f"unknown event {name!r}: never received and no schema declares it",
            )
        if g.get("kind", "conversion") not in GoalKind.values:
            raise _fail(f"goals[{i}].kind", f"one of {', '.join(GoalKind.values)}")
        if g.get("kind") == GoalKind.REVENUE and not g.get("property"):
            raise _fail(f"goals[{i}].property", "a revenue goal names its numeric property")
        prop = g.get("property")
        if prop and (not isinstance(prop, str) or not PROPERTY_KEY.match(prop)):
            raise _fail(
                f"goals[{i}].property",
                "a property name: letters, digits, _ and - (up to 100), as in conditions",
            )
        if g.get("where"):
            condition_check({"event": name, "where": g["where"]}, field=f"goals[{i}].where")
        window = g.get("window_seconds", DEFAULT_WINDOW_SECONDS)
        if (
            isinstance(window, bool)
            or not isinstance(window, int)
            or not 60 <= window <= MAX_WINDOW_SECONDS
            or window % 60
        ):
            raise _fail(
                f"goals[{i}].window_seconds",
                f"whole minutes from 60 to {MAX_WINDOW_SECONDS} (1m to 365d)",
            )
    if sum(1 for g in goals if g.get("primary")) > 1:
        raise _fail("goals", "only one goal can be primary")


def _check_namespace(exp: Experiment) -> None:
    if not 0.0 <= exp.namespace_start < exp.namespace_end <= 1.0:
        raise _fail("namespace", "the range must satisfy 0 ≤ start < end ≤ 1")
    if not exp.namespace:
        return
    others = (
        Experiment.objects.filter(namespace=exp.namespace)
        .exclude(pk=exp.pk)
        .exclude(status=Status.STOPPED)
    )
    for other in others:
        if exp.namespace_start < other.namespace_end and other.namespace_start < exp.namespace_end:
            raise _fail(
                "namespace",
                f"[{exp.namespace_start:g}, {exp.namespace_end:g}) overlaps experiment "
                f"{other.key} [{other.namespace_start:g}, {other.namespace_end:g}) in namespace {exp.namespace}",
            )


def _check_holdout(exp: Experiment, variants: list[dict[str, Any]] | None) -> None:
    """The personalization holdout runs on no slot, has exactly the variants "holdout"
    and "personalized", and there is one at a time (until it is stopped)."""
    if not exp.holdout:
        return
    if exp.slot_id is not None:
        raise _fail(
            "slot",
            "the holdout experiment runs on no slot (it holds visitors out of all personalization)",
        )
    keys = (
        [str(v.get("key")) for v in variants]
        if variants is not None
        else list(exp.variants.values_list("key", flat=True))
    )
    if sorted(keys) != sorted(HOLDOUT_VARIANTS):
        raise _fail(
            "variants",
            'the holdout experiment has exactly the variants "holdout" and "personalized"',
        )
    other = (
        Experiment.objects.filter(holdout=True)
        .exclude(pk=exp.pk)
        .exclude(status=Status.STOPPED)
        .values_list("key", flat=True)
        .first()
    )
    if other is not None:
        reason = f"experiment {other} is already the holdout (stop it first)"
        raise Conflict(f"holdout: {reason}", details={"holdout": [reason]})


def _check_levels(exp: Experiment) -> None:
    for field, low, high in (
        ("confidence", 0.5, 0.999),
        ("minimum_detectable_effect", 0.001, 10.0),
    ):
        value = getattr(exp, field)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise _fail(field, f"between {low:g} and {high:g}")


def _content_clean(content: dict[str, Any]) -> dict[str, Any]:
    """A variant's `html` is served as-is by `/decide`: sanitized like slot variants'."""
    if isinstance(content.get("html"), str):
        return {**content, "html": html_sanitize(content["html"])}
    return content


def _factors_changed(exp: Experiment) -> bool:
    if exp.pk is None:
        return True
    stored = Experiment.objects.filter(pk=exp.pk).values_list("factors", flat=True).first()
    return stored != exp.factors


def experiment_save(
    *,
    experiment: Experiment,
    actor: str,
    variants: list[dict[str, Any]] | None = None,
    goals: list[dict[str, Any]] | None = None,
) -> Experiment:
    """Create or update an experiment with its variants and goals (validated together).
    A running experiment's variants keep their keys: weights may change, and profiles
    keep the variant they were first exposed to."""
    exp = experiment
    if not 0.0 <= exp.traffic <= 1.0:
        raise _fail("traffic", "between 0 and 1")
    if exp.audience is not None:
        condition_check(exp.audience, allow_context=True, field="audience")
    _check_levels(exp)
    if exp.factors:
        generated = variants_from_factors(exp.factors)
        # Regenerated only when the factors change: a save that leaves them alone keeps
        # the weights someone set.
        if variants is None and _factors_changed(exp):
            variants = generated
    if variants is None and exp.pk is None:
        raise _fail("variants", "required")
    if variants is not None:
        _check_variants(variants)
        if exp.pk is not None and exp.status != Status.DRAFT:
            # In order too: the first is the control the results compare against.
            before = list(exp.variants.order_by("index").values_list("key", flat=True))
            if before != [v["key"] for v in variants]:
                raise _fail(
                    "variants",
                    "a started experiment keeps its variants, in order (weights may change)",
                )
    if exp.pk is not None and exp.status != Status.DRAFT:
        # What places a visitor (the hash seed, the slot, the namespace slice, the
        # holdout flag) is fixed once started: changing it would move everyone not yet
        # exposed, and split the results across two different experiments.
        stored: dict[str, Any] = dict(
            Experiment.objects.filter(pk=exp.pk).values(
                "seed", "key", "slot_id", "namespace", "namespace_start", "namespace_end", "holdout"
            )[0]
        )
        now_values = {
            "seed": exp.seed,
            "key": exp.key,
            "slot_id": exp.slot_id,
            "namespace": exp.namespace,
            "namespace_start": exp.namespace_start,
            "namespace_end": exp.namespace_end,
            "holdout": exp.holdout,
        }
        if stored["seed"] == "" and now_values["seed"] == stored["key"]:
            now_values["seed"] = ""  # the key was the seed all along
        for name, value in now_values.items():
            if stored[name] != value:
                field = {
                    "slot_id": "slot",
                    "namespace_start": "namespace",
                    "namespace_end": "namespace",
                }.get(name, name)
                raise _fail(field, f"cannot change once the experiment has started ({name})")
    if goals is not None or exp.pk is None:
        _check_goals(goals or [])
    _check_namespace(exp)
    _check_holdout(exp, variants)
    created = exp.pk is None
    with transaction.atomic():
        exp.save()
        if variants is not None:
            exp.variants.all().delete()
            Variant.objects.bulk_create(
                Variant(
                    experiment=exp,
                    index=i,
                    key=v["key"],
                    weight=float(v["weight"]),
                    content=_content_clean(v.get("content") or {}),
                )
                for i, v in enumerate(variants)
            )
        if goals is not None:
            exp.goals.all().delete()
            primary_given = any(g.get("primary") for g in goals)
            Goal.objects.bulk_create(
                Goal(
                    experiment=exp,
                    event=g["event"],
                    kind=g.get("kind", GoalKind.CONVERSION),
                    property=g.get("property", ""),
                    where=g.get("where") or [],
                    window_seconds=int(g.get("window_seconds", DEFAULT_WINDOW_SECONDS)),
                    primary=bool(g.get("primary")) or (not primary_given and i == 0),
                )
                for i, g in enumerate(goals)
            )
        audit_record(
            actor=actor,
            action="experiment.created" if created else "experiment.updated",
            object_type="experiments.experiment",
            object_id=exp.pk,
            details={
                "key": exp.key,
                "variants": list(exp.variants.values("key", "weight")),
                "traffic": exp.traffic,
            },
        )
        config_changed()
    return exp


_MOVES = {
    "start": ({Status.DRAFT, Status.PAUSED}, Status.RUNNING),
    "pause": ({Status.RUNNING}, Status.PAUSED),
    "stop": ({Status.RUNNING, Status.PAUSED}, Status.STOPPED),
}


def experiment_transition(*, experiment: Experiment, move: str, actor: str) -> Experiment:
    """start (draft or paused → running), pause, stop (final)."""
    allowed, target = _MOVES[move]
    if experiment.status not in allowed:
        raise Conflict(
            f"status: cannot {move} an experiment that is {experiment.status}",
            details={"status": [f"is {experiment.status}"]},
        )
    with transaction.atomic():
        experiment.status = target
        now = timezone.now()
        if move == "start" and experiment.started_at is None:
            experiment.started_at = now
        if move == "stop":
            experiment.stopped_at = now
        experiment.save(update_fields=["status", "started_at", "stopped_at", "updated_at"])
        audit_record(
            actor=actor,
            action=f"experiment.{move}",
            object_type="experiments.experiment",
            object_id=experiment.pk,
            details={"key": experiment.key},
        )
        config_changed()
    return experiment


def experiment_delete(*, experiment: Experiment, actor: str) -> None:
    """Delete a draft or stopped experiment with its exposures and results; a running or
    paused one is refused (stop it first)."""
    if experiment.status in (Status.RUNNING, Status.PAUSED):
        raise Conflict(
            f"status: cannot delete an experiment that is {experiment.status}: stop it first",
            details={"status": [f"is {experiment.status}: stop it first"]},
        )
    with transaction.atomic():
        pk, key = experiment.pk, experiment.key
        # Plain DELETEs: a long-running experiment has many exposures and snapshots.
        exposures, _ = Exposure.objects.filter(experiment_id=pk).delete()
        results, _ = ResultSnapshot.objects.filter(experiment_id=pk).delete()
        experiment.delete()
        audit_record(
            actor=actor,
            action="experiment.deleted",
            object_type="experiments.experiment",
            object_id=pk,
            details={"key": key, "exposures": exposures, "results": results},
        )
        config_changed()


def _live_profiles(ids: set[Any]) -> dict[uuid.UUID, uuid.UUID]:
    """Each profile id → the live profile it is now (a merged one → the one it was merged
    into); ids of erased profiles are left out."""
    out: dict[uuid.UUID, uuid.UUID] = {}
    pending = {uuid.UUID(str(i)): uuid.UUID(str(i)) for i in ids}  # original → current
    for _ in range(5):  # merges rarely chain; follow a few hops
        if not pending:
            break
        found = dict(
            Profile.objects.filter(pk__in=set(pending.values())).values_list("pk", "merged_into_id")
        )
        step = {}
        for original, current in pending.items():
            if current not in found:
                continue  # erased (or never existed)
            if found[current] is None:
                out[original] = current
            else:
                step[original] = found[current]
        pending = step
    return out


def exposures_record(*, rows: Iterable[dict[str, Any]]) -> int:
    """Exposures from logged decisions: a slot experiment's or flag's answer, and the
    visitor's arm of the global holdout whatever answered. The first per (experiment,
    profile) is kept. A decision logged for a profile since merged counts for the
    profile it was merged into; one since erased counts for nobody. The new exposures'
    profiles get fresh `/decide` snapshots, so the next answer is already sticky."""
    wanted: list[tuple[str, Any, str, datetime]] = []
    for r in rows:
        if not r.get("profile_id"):
            continue
        if r.get("experiment"):
            arm = r.get("experiment_variant") or r["variant"]
            wanted.append((r["experiment"], r["profile_id"], arm, r["decided_at"]))
        if r.get("holdout") and r.get("holdout_variant"):
            wanted.append((r["holdout"], r["profile_id"], r["holdout_variant"], r["decided_at"]))
    if not wanted:
        return 0
    by_key = dict(
        Experiment.objects.filter(key__in={w[0] for w in wanted}).values_list("key", "pk")
    )
    live = _live_profiles({w[1] for w in wanted})
    first: dict[tuple[int, Any], Exposure] = {}
    for key, pid, arm, at in sorted(wanted, key=lambda w: w[3]):
        profile_id = live.get(uuid.UUID(str(pid)))
        if key not in by_key or profile_id is None:
            continue
        first.setdefault(
            (by_key[key], profile_id),
            Exposure(experiment_id=by_key[key], profile_id=profile_id, variant=arm, exposed_at=at),
        )
    if not first:
        return 0
    seen = set(
        Exposure.objects.filter(
            experiment_id__in={e for e, _ in first}, profile_id__in={p for _, p in first}
        ).values_list("experiment_id", "profile_id")
    )
    new = [x for k, x in first.items() if k not in seen]
    Exposure.objects.bulk_create(new, ignore_conflicts=True, batch_size=1000)
    touched = {x.profile_id for x in new}
    if touched:
        transaction.on_commit(lambda: snapshots_invalidate(profile_ids=touched))
    return len(new)


RESULTS_KEPT = 500


def results_refresh(
    *, experiment: Experiment, now: datetime | None = None, full: bool = False
) -> ResultSnapshot:
    """Compute the experiment's results now and keep them as its newest snapshot (the
    oldest beyond RESULTS_KEPT are dropped). Closed days are read from their kept sums
    unless `full` (which recomputes and keeps them anew)."""
    from experiments.results import results_compute
    from experiments.selectors import results_latest

    now = now or timezone.now()
    started = time.perf_counter()
    last = results_latest(experiment=experiment)
    payload = results_compute(
        experiment=experiment,
        now=now,
        previous=last.payload if last is not None else None,
        full=full,
    )
    snapshot = ResultSnapshot.objects.create(
        experiment=experiment,
        computed_at=now,
        payload=payload,
        duration_ms=round((time.perf_counter() - started) * 1000),
    )
    stale = ResultSnapshot.objects.filter(experiment=experiment).order_by("-computed_at", "-pk")[
        RESULTS_KEPT:
    ]
    ResultSnapshot.objects.filter(pk__in=list(stale.values_list("pk", flat=True))).delete()
    return snapshot
