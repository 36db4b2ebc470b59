"""A condition in words, for the reasons a marketer reads ("add_to_cart within 24h and
no purchase within 24h")."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

_OPS = {
    "eq": "is",
    "neq": "is not",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "in",
    "not_in": "not in",
    "contains": "contains",
    "startswith": "starts with",
}


def _value(v: Any) -> str:
    return (
        json.dumps(v, ensure_ascii=False)
        if isinstance(v, str | list)
        else str(v).lower()
        if isinstance(v, bool)
        else str(v)
    )


def _comparison(subject: str, node: Mapping[str, Any]) -> str:
    op, value = node["op"], node.get("value")
    if op == "between" and isinstance(value, list):
        return f"{subject} between {_value(value[0])} and {_value(value[1])}"
    if op == "exists":
        return f"{subject} is set"
    return f"{subject} {_OPS[op]} {_value(value)}"


def _event(node: Mapping[str, Any], negated: bool = False) -> str:
    text = node["event"]
    if "within" in node:
        text += f" within {node['within']}"
    where = node.get("where") or []
    if where:
        text += " where " + " and ".join(_comparison(w["property"], w) for w in where)
    measure = node.get("measure")
    if measure and not (
        measure["fn"] == "count" and measure["op"] == "gte" and measure.get("value") == 1
    ):
        of = (
            f"{measure['fn']} of {measure['property']}"
            if measure.get("property")
            else measure["fn"]
        )
        return ("not " if negated else "") + _comparison(f"{of} of {text}", measure)
    return f"no {text}" if negated else text


def describe(node: Mapping[str, Any]) -> str:
    """A validated condition as one line of text."""
    if "all" in node or "any" in node:
        kids = node["all"] if "all" in node else node["any"]
        if not kids:
            return "always" if "all" in node else "never"
        parts = [
            f"({describe(k)})"
            if ("all" in k or "any" in k) and len(k.get("all", k.get("any", []))) > 1
            else describe(k)
            for k in kids
        ]
        return (" and " if "all" in node else " or ").join(parts)
    if "not" in node:
        inner = node["not"]
        if "event" in inner:
            return _event(inner, negated=True)
        if "segment" in inner:
            return f"not in segment {inner['segment']}"
        if "consent" in inner:
            return f"no {inner['consent']} consent"
        return f"not ({describe(inner)})"
    if "trait" in node:
        return _comparison(node["trait"], node)
    if "attr" in node:
        return _comparison(node["attr"], node)
    if "event" in node:
        return _event(node)
    if "segment" in node:
        return f"in segment {node['segment']}"
    if "score" in node:
        return _comparison(f"{node['score']} score", node)
    if "consent" in node:
        return f"{node['consent']} consent"
    if "context" in node:
        return _comparison(node["context"], node)
    raise ValueError("not a validated condition")
