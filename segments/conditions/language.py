"""Validation and the shared semantics of the condition language. No Django imports.

Semantics both evaluators implement (and docs/conditions.md states):
- A trait or property that is missing or null matches nothing except `neq`/`not_in`
  (which are the negations of `eq`/`in`) and never matches `exists`.
- `eq`/`neq`/`in`/`not_in` compare JSON values with their type: 1 equals 1.0, "1" does
  not equal 1, true is not 1.
- `gt`/`gte`/`lt`/`lte`/`between` compare numbers with numbers and strings with
  strings; anything else does not match.
- `contains` matches a substring of a string; `startswith` a prefix. Case-sensitive.
- Event measures: `count` and `sum` of no events are 0; `avg`/`min`/`max` of no events
  match nothing. Only numeric property values are summed or averaged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

OPS = {
    "eq",
    "neq",
    "gt",
    "gte",
    "lt",
    "lte",
    "in",
    "not_in",
    "contains",
    "startswith",
    "exists",
    "between",
}
ORDER_OPS = {"gt", "gte", "lt", "lte"}
MEASURE_FNS = {"count", "sum", "avg", "min", "max"}
# Computed attributes (numeric; None when unknown). days_since_* count whole days.
ATTRS = {
    "event_count",
    "session_count",
    "page_view_count",
    "purchase_count",
    "revenue",
    "avg_order_value",
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
    "days_since_first_seen",
    "days_since_last_seen",
    "days_since_last_purchase",
    "engagement_score",
}
CONTEXT_KEYS = {
    "page",
    "item",
    "category",
    "device",
    "hour",
    "weekday",
    "locale",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
}
NAME = re.compile(r"^[A-Za-z0-9_$][A-Za-z0-9_.:\- ]{0,199}$")
KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$")
SLUG = re.compile(r"^[-a-zA-Z0-9_]{1,100}$")
WINDOW = re.compile(r"^(\d{1,6})([mhdw])$")
UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DEPTH = 12
MAX_NODES = 200
MAX_NUMBER = 1e15


class ConditionError(ValueError):
    """A bad node: `path` points at it (e.g. "all[1].measure.op")."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or '(root)'}: {reason}")
        self.path = path or "(root)"
        self.reason = reason


@dataclass(frozen=True, slots=True)
class EventFact:
    event: str  # the track event name, or "$page" / "$screen" / "$identify" / "$alias"
    timestamp: datetime
    properties: Mapping[str, Any]


@dataclass
class Facts:
    """What the in-memory evaluator knows about one profile."""

    traits: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, float | int | None] = field(default_factory=dict)
    events: list[EventFact] = field(default_factory=list)
    segments: set[str] = field(default_factory=set)
    scores: Mapping[str, float] = field(default_factory=dict)
    consent: Mapping[str, bool] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)


def _sub(path: str, key: str) -> str:
    """The path of a child key ("value" at the root, "all[0].value" below it)."""
    return f"{path}.{key}" if path else key


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_value(op: str, value: Any, path: str) -> None:
    if op == "exists":
        if not (value is None or value is True):
            raise ConditionError(_sub(path, "value"), "exists takes no value (or true)")
        return
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or len(value) > 1000:
            raise ConditionError(
                _sub(path, "value"), f"{op} needs a non-empty list (at most 1000 items)"
            )
        for i, item in enumerate(value):
            _check_scalar(item, f"{path}.value[{i}]")
        return
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
            raise ConditionError(_sub(path, "value"), "between needs [low, high] numbers")
        if value[0] > value[1]:
            raise ConditionError(_sub(path, "value"), "between needs low <= high")
        for v in value:
            _check_scalar(v, _sub(path, "value"))
        return
    _check_scalar(value, _sub(path, "value"))
    if op in ORDER_OPS and not (_is_number(value) or isinstance(value, str)):
        raise ConditionError(_sub(path, "value"), f"{op} compares numbers or strings")
    if op in ("contains", "startswith") and not isinstance(value, str):
        raise ConditionError(_sub(path, "value"), f"{op} needs a string")


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, bool | str):
        if isinstance(value, str) and (len(value) > 1000 or "\x00" in value):
            raise ConditionError(path, "strings are at most 1000 characters, without NUL")
        return
    if _is_number(value):
        if value != value or abs(value) > MAX_NUMBER:  # NaN or huge
            raise ConditionError(path, f"numbers must be finite and at most {MAX_NUMBER:g}")
        return
    raise ConditionError(path, "must be a string, number or true/false")


def _check_comparison(node: Mapping[str, Any], path: str, allowed: set[str]) -> None:
    extra = set(node) - allowed
    if extra:
        raise ConditionError(path, f"unknown key(s): {', '.join(sorted(extra))}")
    op = node.get("op")
    if not isinstance(op, str):
        op = None
    if op not in OPS:
        raise ConditionError(_sub(path, "op"), f"must be one of {', '.join(sorted(OPS))}")
    if op != "exists" and "value" not in node:
        raise ConditionError(_sub(path, "value"), "required")
    _check_value(op, node.get("value"), path)


def window_seconds(within: str) -> int:
    m = WINDOW.match(within)
    if not m:
        raise ConditionError("within", 'must look like "30m", "24h", "7d" or "4w"')
    return int(m.group(1)) * UNIT_SECONDS[m.group(2)]


def validate(tree: Any, *, allow_context: bool = False) -> Any:
    """Check a condition tree; raises ConditionError naming the first bad node."""
    count = 0

    def walk(node: Any, path: str, depth: int) -> None:
        nonlocal count
        count += 1
        if count > MAX_NODES:
            raise ConditionError(path, f"a condition has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise ConditionError(path, f"nested deeper than {MAX_DEPTH}")
        if not isinstance(node, dict) or not node:
            raise ConditionError(path, "a condition is a JSON object")
        kinds = [
            k
            for k in (
                "all",
                "any",
                "not",
                "trait",
                "attr",
                "event",
                "segment",
                "score",
                "consent",
                "context",
            )
            if k in node
        ]
        if len(kinds) != 1:
            raise ConditionError(
                path,
                "needs exactly one of all, any, not, trait, attr, event, segment, score, consent, context",
            )
        kind = kinds[0]
        here = f"{path}." if path else ""
        if kind in ("all", "any"):
            if set(node) != {kind}:
                raise ConditionError(path, f"{kind} takes nothing else")
            children = node[kind]
            if not isinstance(children, list):
                raise ConditionError(here + kind, "must be a list of conditions")
            for i, child in enumerate(children):
                walk(child, f"{here}{kind}[{i}]", depth + 1)
        elif kind == "not":
            if set(node) != {"not"}:
                raise ConditionError(path, "not takes nothing else")
            walk(node["not"], here + "not", depth + 1)
        elif kind == "trait":
            if not isinstance(node["trait"], str) or not KEY.match(node["trait"]):
                raise ConditionError(here + "trait", "a trait name: letters, digits, _ and -")
            _check_comparison(node, path, {"trait", "op", "value"})
        elif kind == "attr":
            if not isinstance(node["attr"], str) or node["attr"] not in ATTRS:
                raise ConditionError(
                    here + "attr", f"unknown attribute; known: {', '.join(sorted(ATTRS))}"
                )
            _check_comparison(node, path, {"attr", "op", "value"})
            if node["op"] in ("contains", "startswith"):
                raise ConditionError(here + "op", "attributes are numbers")
            if node["op"] in ORDER_OPS and not _is_number(node.get("value")):
                raise ConditionError(here + "value", "attributes compare with numbers")
        elif kind == "event":
            extra = set(node) - {"event", "within", "where", "measure"}
            if extra:
                raise ConditionError(path, f"unknown key(s): {', '.join(sorted(extra))}")
            if not isinstance(node["event"], str) or not NAME.match(node["event"]):
                raise ConditionError(here + "event", "an event name")
            if "within" in node and (
                not isinstance(node["within"], str) or not WINDOW.match(node["within"])
            ):
                raise ConditionError(here + "within", 'must look like "30m", "24h", "7d" or "4w"')
            where = node.get("where", [])
            if not isinstance(where, list) or len(where) > 20:
                raise ConditionError(here + "where", "must be a list of property filters")
            for i, w in enumerate(where):
                wpath = f"{here}where[{i}]"
                if (
                    not isinstance(w, dict)
                    or not isinstance(w.get("property"), str)
                    or not KEY.match(w["property"])
                ):
                    raise ConditionError(
                        wpath + ".property", "a property name: letters, digits, _ and -"
                    )
                _check_comparison(w, wpath, {"property", "op", "value"})
            if "measure" in node:
                m = node["measure"]
                mpath = here + "measure"
                if not isinstance(m, dict):
                    raise ConditionError(mpath, "must be an object")
                if not isinstance(m.get("fn"), str) or m["fn"] not in MEASURE_FNS:
                    raise ConditionError(
                        mpath + ".fn", f"must be one of {', '.join(sorted(MEASURE_FNS))}"
                    )
                if m["fn"] == "count":
                    if "property" in m:
                        raise ConditionError(mpath + ".property", "count takes no property")
                elif not isinstance(m.get("property"), str) or not KEY.match(m["property"]):
                    raise ConditionError(mpath + ".property", f"{m['fn']} needs a numeric property")
                _check_comparison(m, mpath, {"fn", "property", "op", "value"})
                if m["op"] in ("contains", "startswith", "exists") or (
                    m["op"] not in ("in", "not_in", "between") and not _is_number(m.get("value"))
                ):
                    raise ConditionError(mpath + ".value", "a measure compares with numbers")
                if m["op"] in ("in", "not_in") and not all(_is_number(v) for v in m["value"]):
                    raise ConditionError(mpath + ".value", "a measure compares with numbers")
        elif kind == "segment":
            if (
                set(node) != {"segment"}
                or not isinstance(node["segment"], str)
                or not SLUG.match(node["segment"])
            ):
                raise ConditionError(here + "segment", "a segment slug")
        elif kind == "score":
            if not isinstance(node["score"], str) or not SLUG.match(node["score"]):
                raise ConditionError(here + "score", "a model key")
            _check_comparison(node, path, {"score", "op", "value"})
            # eq / in: a clustering's score is the profile's cluster number
            if (
                node["op"] not in ORDER_OPS | {"eq", "in", "between", "exists"}
                or (node["op"] in ORDER_OPS | {"eq"} and not _is_number(node["value"]))
                or (node["op"] == "in" and not all(_is_number(v) for v in node["value"]))
            ):
                raise ConditionError(
                    here + "op",
                    "a score compares with numbers (gt, gte, lt, lte, eq, in, between, exists)",
                )
        elif kind == "consent":
            if (
                set(node) != {"consent"}
                or not isinstance(node["consent"], str)
                or not SLUG.match(node["consent"])
            ):
                raise ConditionError(here + "consent", "a purpose code")
        elif kind == "context":
            if not allow_context:
                raise ConditionError(
                    here + "context",
                    "context conditions are only for rules (the request's context)",
                )
            if not isinstance(node["context"], str) or node["context"] not in CONTEXT_KEYS:
                raise ConditionError(
                    here + "context", f"unknown context; known: {', '.join(sorted(CONTEXT_KEYS))}"
                )
            _check_comparison(node, path, {"context", "op", "value"})

    walk(tree, "", 0)
    return tree


def _nodes(tree: Any) -> Iterator[Mapping[str, Any]]:
    if not isinstance(tree, dict):
        return
    yield tree
    for key in ("all", "any"):
        for child in tree.get(key, []) if isinstance(tree.get(key), list) else []:
            yield from _nodes(child)
    if "not" in tree:
        yield from _nodes(tree["not"])


def referenced_segments(tree: Any) -> set[str]:
    return {n["segment"] for n in _nodes(tree) if "segment" in n}


def score_keys(tree: Any) -> set[str]:
    return {n["score"] for n in _nodes(tree) if "score" in n}


def event_names(tree: Any) -> set[str]:
    return {n["event"] for n in _nodes(tree) if "event" in n}


def uses(tree: Any) -> set[str]:
    """Node kinds a condition uses (what changes can change its result)."""
    kinds = set()
    for n in _nodes(tree):
        for k in ("trait", "attr", "event", "segment", "score", "consent", "context"):
            if k in n:
                kinds.add(k)
    return kinds


def max_window(tree: Any) -> int | None:
    """The longest `within` of the event nodes (None if one has no window: all time)."""
    longest = 0
    for n in _nodes(tree):
        if "event" in n:
            if "within" not in n:
                return None
            longest = max(longest, window_seconds(n["within"]))
    return longest
