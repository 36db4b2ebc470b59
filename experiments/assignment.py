"""The experiments' answer for a slot in `/decide` (registered as a rules extension):
an audience member inside the traffic allocation (and the namespace slice) gets a
variant by GrowthBook's v2 hash; a profile keeps the variant it was first exposed to."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from experiments.hashing import choose_variant, hash_v2, in_namespace
from experiments.selectors import ExperimentsState
from rules.engine import CompiledSlot, SlotDecision
from segments.conditions import Facts, evaluate


def namespace_hash(namespace: str, visitor: str) -> float:
    return hash_v2(f"__namespace__:{namespace}", visitor)


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
    # GrowthBook hashes the raw id: "u:<user_id>" / "a:<anonymous_id>" → the id
    unit = visitor.split(":", 1)[1] if visitor[1:2] == ":" else visitor
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


def decide_extension(
    state: Any, data: Any, slot: CompiledSlot, facts: Facts, now: datetime, visitor: str
) -> SlotDecision | None:
    return assign(state, data, slot, facts, now, visitor)
