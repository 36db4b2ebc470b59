"""The in-memory evaluator: decides a condition for one profile's facts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from segments.conditions.language import EventFact, Facts, window_seconds

_MISSING = object()


def _num(v: Any) -> bool:
    return isinstance(v, int | float | Decimal) and not isinstance(v, bool)


def _json_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _num(a) and _num(b):
        return bool(a == b)
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    return False


def compare(actual: Any, op: str, value: Any) -> bool:
    """One comparison with the language's typed semantics (see language.py)."""
    present = actual is not _MISSING and actual is not None
    if op == "exists":
        return present
    if op == "neq":
        return not compare(actual, "eq", value)
    if op == "not_in":
        return not compare(actual, "in", value)
    if not present:
        return False
    if op == "eq":
        return _json_eq(actual, value)
    if op == "in":
        return any(_json_eq(actual, v) for v in value)
    if op in ("gt", "gte", "lt", "lte"):
        if (_num(actual) and _num(value)) or (isinstance(actual, str) and isinstance(value, str)):
            a, b = actual, value
        else:
            return False
        return bool({"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op])
    if op == "between":
        return _num(actual) and bool(value[0] <= actual <= value[1])
    if op == "contains":
        return isinstance(actual, str) and value in actual
    if op == "startswith":
        return isinstance(actual, str) and actual.startswith(value)
    raise ValueError(op)


def _matching_events(node: Mapping[str, Any], facts: Facts, now: datetime) -> list[EventFact]:
    since = now - timedelta(seconds=window_seconds(node["within"])) if "within" in node else None
    out = []
    for e in facts.events:
        if e.event != node["event"]:
            continue
        if since is not None and e.timestamp < since:
            continue
        if e.timestamp > now:
            continue
        if all(
            compare(e.properties.get(w["property"], _MISSING), w["op"], w.get("value"))
            for w in node.get("where", [])
        ):
            out.append(e)
    return out


def _measure(node: Mapping[str, Any], events: list[EventFact]) -> Any:
    m = node.get("measure", {"fn": "count", "op": "gte", "value": 1})
    fn = m["fn"]
    if fn == "count":
        return len(events)
    nums: list[Any] = [v for e in events if _num(v := e.properties.get(m["property"]))]
    if fn == "sum":
        return sum(nums) if nums else 0
    if not nums:
        return None
    if fn == "avg":
        return sum(nums) / len(nums)
    return min(nums) if fn == "min" else max(nums)


def evaluate(tree: Mapping[str, Any], facts: Facts, now: datetime) -> bool:
    """Whether the profile described by `facts` matches the (validated) condition.

    The same decisions as `explain` (which also says why), without building its text:
    this is `/decide`'s hot path."""
    if "all" in tree:
        return all(evaluate(c, facts, now) for c in tree["all"])
    if "any" in tree:
        return any(evaluate(c, facts, now) for c in tree["any"])
    if "not" in tree:
        return not evaluate(tree["not"], facts, now)
    if "trait" in tree:
        return compare(facts.traits.get(tree["trait"], _MISSING), tree["op"], tree.get("value"))
    if "attr" in tree:
        return compare(facts.attrs.get(tree["attr"]), tree["op"], tree.get("value"))
    if "segment" in tree:
        return tree["segment"] in facts.segments
    if "context" in tree:
        return compare(facts.context.get(tree["context"], _MISSING), tree["op"], tree.get("value"))
    if "consent" in tree:
        return bool(facts.consent.get(tree["consent"], False))
    if "score" in tree:
        return compare(facts.scores.get(tree["score"]), tree["op"], tree.get("value"))
    if "event" in tree:
        value = _measure(tree, _matching_events(tree, facts, now))
        m = tree.get("measure", _COUNT_ANY)
        return value is not None and compare(value, m["op"], m.get("value"))
    raise ValueError("not a validated condition")


_COUNT_ANY = {"fn": "count", "op": "gte", "value": 1}


def explain(tree: Mapping[str, Any], facts: Facts, now: datetime) -> list[tuple[str, bool, str]]:
    """Every node with its result and what was compared: "why is X (not) in this segment"."""
    lines: list[tuple[str, bool, str]] = []
    _explain(tree, facts, now, "", lines)
    return lines


def _explain(
    node: Mapping[str, Any],
    facts: Facts,
    now: datetime,
    path: str,
    lines: list[tuple[str, bool, str]] | None,
) -> bool:
    here = f"{path}." if path else ""
    detail = ""
    if "all" in node:
        results = [
            _explain(c, facts, now, f"{here}all[{i}]", lines) for i, c in enumerate(node["all"])
        ]
        result = all(results)
        detail = f"all of {len(results)}: {sum(results)} true"
    elif "any" in node:
        results = [
            _explain(c, facts, now, f"{here}any[{i}]", lines) for i, c in enumerate(node["any"])
        ]
        result = any(results)
        detail = f"any of {len(results)}: {sum(results)} true"
    elif "not" in node:
        result = not _explain(node["not"], facts, now, here + "not", lines)
        detail = "not"
    elif "trait" in node:
        actual = facts.traits.get(node["trait"], _MISSING)
        result = compare(actual, node["op"], node.get("value"))
        detail = f"trait {node['trait']} = {'(missing)' if actual is _MISSING else repr(actual)}"
    elif "attr" in node:
        actual = facts.attrs.get(node["attr"])
        result = compare(actual, node["op"], node.get("value"))
        detail = f"{node['attr']} = {actual!r}"
    elif "event" in node:
        events = _matching_events(node, facts, now)
        value = _measure(node, events)
        m = node.get("measure", {"fn": "count", "op": "gte", "value": 1})
        result = value is not None and compare(value, m["op"], m.get("value"))
        detail = f"{m['fn']} of {node['event']} = {value!r} ({len(events)} matching events)"
    elif "segment" in node:
        result = node["segment"] in facts.segments
        detail = f"member of {node['segment']}: {result}"
    elif "score" in node:
        actual = facts.scores.get(node["score"])
        result = compare(actual, node["op"], node.get("value"))
        detail = f"score {node['score']} = {actual!r}"
    elif "consent" in node:
        result = bool(facts.consent.get(node["consent"], False))
        detail = f"consent {node['consent']}: {'granted' if result else 'not granted'}"
    elif "context" in node:
        actual = facts.context.get(node["context"], _MISSING)
        result = compare(actual, node["op"], node.get("value"))
        detail = (
            f"context {node['context']} = {'(missing)' if actual is _MISSING else repr(actual)}"
        )
    else:  # validated trees never get here
        raise ValueError(f"unknown node at {path}")
    if lines is not None:
        lines.append((path or "(root)", result, detail))
    return result
