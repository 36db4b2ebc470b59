"""Extension point: an extension answers for a slot before its rules (the experiments app
registers one for running experiments).

An extension has
- `load()`: its compiled state, loaded with the rules configuration (so it is reloaded
  whenever the configuration version moves: call rules.services.config_changed() after
  changing what it loads);
- `profile_data(profile_ids)`: per-profile data kept in the cached snapshot (e.g. sticky
  assignments), read in bulk when snapshots are built;
- `decide(state, data, slot, facts, now, visitor)` (optional): a SlotDecision, or None
  to let the slot's rules answer. `data` is this profile's entry of `profile_data`
  (None for an unknown visitor);
- `strategies` (optional): slot strategies it implements, by name (the recommendations
  app implements "recommendations"): `fn(state, data, slot, facts, now, visitor,
  personal)` answers a slot of that strategy when none of its rules matched (and, with
  `personal` False, for a visitor without personalization consent), or returns None
  to leave it to the default; `check_options(options)` says what is wrong with a
  slot's options for those strategies (field → problems);
- `conditions(state)` (optional): the condition trees it evaluates (experiments'
  audiences), so profile snapshots read the events those trees name;
- `tag(state, data, visitor)` (optional): an experiment the visitor is in across every
  slot, as `{"key", "variant"}` (the global personalization holdout), or None. Every
  decision carries it in `tag` (logged as `holdout`/`holdout_variant`, so both arms are
  exposed whatever answered), and those that name no experiment of their own show it as
  their `experiment`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from rules.engine import CompiledSlot, Provider, SlotDecision, SlotStrategy
from segments.conditions import Facts


@dataclass(frozen=True)
class Extension:
    name: str
    load: Callable[[], Any]
    profile_data: Callable[[list[uuid.UUID]], dict[uuid.UUID, Any]]
    decide: Callable[[Any, Any, CompiledSlot, Facts, datetime, str], SlotDecision | None] | None = (
        None
    )
    strategies: Mapping[
        str, Callable[[Any, Any, CompiledSlot, Facts, datetime, str, bool], SlotDecision | None]
    ] = field(default_factory=dict)
    check_options: Callable[[Mapping[str, Any]], dict[str, list[str]]] | None = None
    tag: Callable[[Any, Any, str], dict[str, str] | None] | None = None
    # the condition trees its decisions evaluate (so snapshots read the events they name)
    conditions: Callable[[Any], Iterable[Any]] | None = None


_EXTENSIONS: dict[str, Extension] = {}


def extension_register(extension: Extension) -> None:
    _EXTENSIONS[extension.name] = extension


def extensions() -> tuple[Extension, ...]:
    return tuple(_EXTENSIONS.values())


def providers(states: dict[str, Any], data: dict[str, Any]) -> list[Provider]:
    """The extensions bound to their loaded state and one profile's data."""
    return [
        partial(_call, ext, states.get(ext.name), data.get(ext.name))
        for ext in _EXTENSIONS.values()
        if ext.name in states and ext.decide is not None
    ]


def strategies(states: dict[str, Any], data: dict[str, Any]) -> dict[str, SlotStrategy]:
    """The slot strategies the extensions implement, bound to their state and one
    profile's data."""
    out: dict[str, SlotStrategy] = {}
    for ext in _EXTENSIONS.values():
        if ext.name in states:
            for name, fn in ext.strategies.items():
                out[name] = partial(fn, states.get(ext.name), data.get(ext.name))
    return out


def strategy_options_problems(strategy: str, options: Mapping[str, Any]) -> dict[str, list[str]]:
    """What the extension implementing `strategy` finds wrong with a slot's options."""
    for ext in _EXTENSIONS.values():
        if strategy in ext.strategies and ext.check_options is not None:
            return ext.check_options(options)
    return {}


def _call(
    ext: Extension,
    state: Any,
    data: Any,
    slot: CompiledSlot,
    facts: Facts,
    now: datetime,
    visitor: str,
) -> SlotDecision | None:
    assert ext.decide is not None
    return ext.decide(state, data, slot, facts, now, visitor)


def tag_decisions(
    states: dict[str, Any],
    data: dict[str, Any],
    decisions: Iterable[SlotDecision],
    visitor: str,
    *,
    show_in: set[str],
) -> None:
    """Tag every decision with the visitor's cross-slot experiment (the first extension
    that has one); those of the slots in `show_in` that name no experiment of their own
    show it as theirs."""
    for ext in _EXTENSIONS.values():
        if ext.tag is None or ext.name not in states:
            continue
        tag = ext.tag(states[ext.name], data.get(ext.name), visitor)
        if tag is not None:
            for d in decisions:
                d.tag = dict(tag)
                if d.experiment is None and d.slot in show_in:
                    d.experiment = dict(tag)
            return


def conditions(states: dict[str, Any]) -> list[Any]:
    """Every condition tree the loaded extensions evaluate against a profile."""
    return [
        tree
        for ext in _EXTENSIONS.values()
        if ext.conditions is not None and ext.name in states
        for tree in ext.conditions(states[ext.name])
    ]


def states_load() -> dict[str, Any]:
    return {ext.name: ext.load() for ext in _EXTENSIONS.values()}


def profile_data(profile_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    ids = list(profile_ids)
    out: dict[uuid.UUID, dict[str, Any]] = {pid: {} for pid in ids}
    for ext in _EXTENSIONS.values():
        for pid, value in ext.profile_data(ids).items():
            out.setdefault(pid, {})[ext.name] = value
    return out
