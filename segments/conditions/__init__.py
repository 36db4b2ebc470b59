"""The condition language shared by segments and rules (DESIGN.md §5).

`validate` checks a JSON tree and names the bad node by path; `evaluate` decides it for
one profile in memory; `segments.compiler` turns it into one SQL query over all
profiles. The two must agree on every input (tests/segments/test_agreement.py).
"""

from segments.conditions.describe import describe
from segments.conditions.evaluate import evaluate, explain
from segments.conditions.language import (
    ATTRS,
    ConditionError,
    EventFact,
    Facts,
    event_names,
    referenced_segments,
    validate,
    window_seconds,
)

__all__ = [
    "ATTRS",
    "ConditionError",
    "EventFact",
    "Facts",
    "describe",
    "evaluate",
    "event_names",
    "explain",
    "referenced_segments",
    "validate",
    "window_seconds",
]
