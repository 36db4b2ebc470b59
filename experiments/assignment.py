"""The experiments' answer for a slot in `/decide` (registered as a rules extension):
an audience member inside the traffic allocation (and the namespace slice) gets a
variant by GrowthBook's v2 hash; a profile keeps the variant it was first exposed to.

Before any of that, the global personalization holdout: a visitor hashed into its
'holdout' arm gets every slot's default (no experiment, no rule) with a reason that says
so; every other answer is tagged with the 'personalized' arm (rules.hooks `tag`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from experiments.hashing import choose_variant, hash_v2, in_namespace
from experiments.selectors import CompiledExperiment, ExperimentsState
from rules.engine import CompiledSlot, SlotDecision, default_decision
from segments.conditions import Facts, evaluate


def namespace_hash(namespace: str, visitor: str) -> float:
    return hash_v2(f"__namespace__:{namespace}", visitor)


HOLDOUT_ARM = "holdout"


def _unit(visitor: str) -> str:
    # GrowthBook hashes the raw id: "u:<user_id>" / "a:<anonymous_id>" → the id
    return visitor.split(":", 1)[1] if visitor[1:2] == ":" else visitor


def holdout_arm(holdout: CompiledExperiment, exposures: dict[str, str] | None, visitor: str) -> str:
    """The visitor's arm of the global holdout: the one first exposed to (sticky), else by hash."""
    sticky = (exposures or {}).get(holdout.key)
    if sticky and holdout.variant(sticky) is not None:
        return sticky
    index = choose_variant(hash_v2(holdout.seed, _unit(visitor)), holdout.ranges)
    return holdout.variants[index].key if index >= 0 else holdout.variants[-1].key


def _held_out(holdout: CompiledExperiment, slot: CompiledSlot) -> SlotDecision:
    share = next((v.weight for v in holdout.variants if v.key == HOLDOUT_ARM), 0.0)
    decision = default_decision(
        slot, f"global personalization holdout ({share:.0%} of visitors get only defaults)"
    )
    decision.experiment = {"key": holdout.key, "variant": HOLDOUT_ARM}
    return decision


def assign(
    state: ExperimentsState | None,
    exposures: dict[str, str] | None,
    slot: CompiledSlot,
    facts: Facts,
    now: datetime,
    visitor: str,
) -> SlotDecision | None:
    if state is None:
        return None
    if state.holdout is not None and holdout_arm(state.holdout, exposures, visitor) == HOLDOUT_ARM:
        return _held_out(state.holdout, slot)
    unit = _unit(visitor)
    for exp in state.by_slot.get(slot.key, ()):
        sticky = (exposures or {}).get(exp.key)
        variant = exp.variant(sticky) if sticky else None
        if variant is not None:
            why = "sticky: first exposed to it"
        else:
            if exp.audience is not None and not evaluate(exp.audience, facts, now):
                continue
            if exp.namespace and not in_namespace(
                namespace_hash(exp.namespace, unit), *exp.namespace_range
            ):
                continue
            bucket = hash_v2(exp.seed, unit)
            index = choose_variant(bucket, exp.ranges)
            if index < 0:
                continue  # outside the traffic allocation
            variant = exp.variants[index]
            why = f"hash bucket {bucket:.4f}"
        return SlotDecision(
            slot.key,
            variant.key,
            variant.content,
            "experiment",
            f"experiment '{exp.name}': variant {variant.key} ({why})",
            experiment={"key": exp.key, "variant": variant.key},
        )
    return None


def holdout_tag(state: Any, data: Any, visitor: str) -> dict[str, str] | None:
    """The global holdout arm that every answer without an experiment of its own is in."""
    if not isinstance(state, ExperimentsState) or state.holdout is None:
        return None
    return {"key": state.holdout.key, "variant": holdout_arm(state.holdout, data, visitor)}


def audiences(state: Any) -> list[Any]:
    """The running experiments' audience conditions."""
    if not isinstance(state, ExperimentsState):
        return []
    return [
        exp.audience for exps in state.by_slot.values() for exp in exps if exp.audience is not None
    ]


def decide_extension(
    state: Any, data: Any, slot: CompiledSlot, facts: Facts, now: datetime, visitor: str
) -> SlotDecision | None:
    return assign(state, data, slot, facts, now, visitor)
