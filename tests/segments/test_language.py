"""The condition language: validation names the bad node, and the evaluator's semantics
on hand-written examples (DESIGN.md §5, segments/conditions/language.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from segments.conditions import ConditionError, EventFact, Facts, evaluate, explain, validate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def nested_not(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"trait": "plan", "op": "eq", "value": "pro"}
    for _ in range(depth):
        tree = {"not": tree}
    return tree


# --- validation -------------------------------------------------------------------------

BAD_TREES = [
    # (tree, path of the bad node, words the reason contains)
    ({"all": [{"trait": "plan", "op": "like", "value": "pro"}]}, "all[0].op", "must be one of"),
    ({"any": [{"attr": "revenue", "op": "gte"}]}, "any[0].value", "required"),
    (
        {
            "all": [
                {"trait": "plan", "op": "eq", "value": "pro"},
                {"not": {"trait": "x", "op": "eq"}},
            ]
        },
        "all[1].not.value",
        "required",
    ),
    ({"any": [{"event": "purchase", "within": "3 days"}]}, "any[0].within", '"24h"'),
    ({"event": "purchase", "within": "24 h"}, "within", "must look like"),
    ({"attr": "shoe_size", "op": "gt", "value": 3}, "attr", "unknown attribute"),
    ({"attr": "revenue", "op": "gt", "value": "3"}, "value", "numbers"),
    ({"attr": "revenue", "op": "contains", "value": "3"}, "op", "attributes are numbers"),
    (
        {"event": "purchase", "measure": {"fn": "sum", "op": "gte", "value": 3}},
        "measure.property",
        "sum needs a numeric property",
    ),
    (
        {
            "event": "purchase",
            "measure": {"fn": "count", "property": "price", "op": "gte", "value": 3},
        },
        "measure.property",
        "count takes no property",
    ),
    (
        {"event": "purchase", "measure": {"fn": "median", "op": "gte", "value": 3}},
        "measure.fn",
        "must be one of",
    ),
    (
        {"event": "purchase", "measure": {"fn": "count", "op": "gte", "value": "3"}},
        "measure.value",
        "compares with numbers",
    ),
    (
        {"event": "purchase", "where": [{"property": "price", "op": "gt"}]},
        "where[0].value",
        "required",
    ),
    ({"event": "purchase", "where": [{"op": "eq", "value": 1}]}, "where[0].property", "property"),
    ({"event": "purchase", "where": {"property": "x"}}, "where", "must be a list"),
    ({"event": "purchase", "when": "now"}, "(root)", "unknown key(s): when"),
    ({"all": {"trait": "plan", "op": "eq", "value": "pro"}}, "all", "must be a list"),
    ({"any": "trait"}, "any", "must be a list"),
    ({"all": [], "any": []}, "(root)", "exactly one of"),
    ({"trait": "plan", "attr": "revenue", "op": "eq", "value": 1}, "(root)", "exactly one of"),
    ({"all": [{"event": "x", "segment": "y"}]}, "all[0]", "exactly one of"),
    ({}, "(root)", "JSON object"),
    ([], "(root)", "JSON object"),
    ({"all": ["plan"]}, "all[0]", "JSON object"),
    ({"trait": "plan", "op": "eq", "value": "pro", "extra": 1}, "(root)", "unknown key(s): extra"),
    ({"trait": "bad name!", "op": "eq", "value": 1}, "trait", "trait name"),
    ({"segment": "not a slug!"}, "segment", "segment slug"),
    ({"score": "churn", "op": "contains", "value": "x"}, "op", "score compares with numbers"),
    ({"consent": "market ing"}, "consent", "purpose code"),
    ({"all": [{"trait": "age", "op": "in", "value": []}]}, "all[0].value", "non-empty list"),
    ({"all": [{"trait": "age", "op": "between", "value": [5, 1]}]}, "all[0].value", "low <= high"),
    ({"all": [{"trait": "age", "op": "between", "value": [1]}]}, "all[0].value", "[low, high]"),
    ({"all": [{"trait": "age", "op": "contains", "value": 1}]}, "all[0].value", "needs a string"),
    ({"all": [{"trait": "age", "op": "exists", "value": "x"}]}, "all[0].value", "no value"),
    ({"all": [{"trait": "age", "op": "eq", "value": {"a": 1}}]}, "all[0].value", "string, number"),
    # numbers must be finite and not huge
    ({"all": [{"trait": "age", "op": "gt", "value": float("nan")}]}, "all[0].value", "finite"),
    ({"all": [{"trait": "age", "op": "gt", "value": float("inf")}]}, "all[0].value", "finite"),
    ({"all": [{"trait": "age", "op": "eq", "value": 10**16}]}, "all[0].value", "finite"),
    ({"all": [{"trait": "age", "op": "in", "value": [1, 1e300]}]}, "all[0].value[1]", "finite"),
    (
        {"event": "buy", "measure": {"fn": "sum", "property": "p", "op": "gte", "value": -2e15}},
        "measure.value",
        "finite",
    ),
    # strings without NUL, at most 1000 characters
    ({"any": [{"trait": "name", "op": "eq", "value": "a\x00b"}]}, "any[0].value", "without NUL"),
    ({"any": [{"trait": "name", "op": "in", "value": ["ok", "\x00"]}]}, "any[0].value[1]", "NUL"),
    ({"any": [{"trait": "name", "op": "eq", "value": "x" * 1001}]}, "any[0].value", "1000"),
    (nested_not(13), "not." * 12 + "not", "nested deeper than 12"),
]


@pytest.mark.parametrize(("tree", "path", "reason"), BAD_TREES, ids=[b[1] for b in BAD_TREES])
def test_bad_tree_is_refused_naming_the_node_and_reason(tree, path, reason):
    # Given a malformed condition
    # When it is validated
    with pytest.raises(ConditionError) as caught:
        validate(tree)

    # Then the error points at the bad node and says why
    assert caught.value.path == path
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    "tree",
    [
        {"trait": "plan", "op": "eq"},
        {"trait": "age", "op": "gt", "value": float("nan")},
        {"score": "churn", "op": "gte"},
    ],
)
def test_bad_value_at_the_root_is_named_value_without_a_leading_dot(tree):
    # Given a comparison at the root whose value is bad
    with pytest.raises(ConditionError) as caught:
        validate(tree)

    # Then the path reads "value", like "trait", "attr" and "within" at the root do
    assert caught.value.path == "value"


@pytest.mark.parametrize(
    ("tree", "path"),
    [
        ({"all": [{"trait": "plan", "op": ["eq"], "value": "pro"}]}, "all[0].op"),
        ({"attr": ["revenue"], "op": "gt", "value": 1}, "attr"),
        (
            {"event": "buy", "measure": {"fn": ["sum"], "property": "p", "op": "gt", "value": 1}},
            "measure.fn",
        ),
    ],
)
def test_a_list_where_a_name_belongs_is_a_condition_error_not_a_crash(tree, path):
    # Given JSON that puts a list where an operator / attribute / function name belongs
    # When it is validated / Then it is refused like any other bad node (not a TypeError)
    with pytest.raises(ConditionError) as caught:
        validate(tree)
    assert caught.value.path == path


def test_depth_limit_allows_twelve_levels():
    assert validate(nested_not(12)) == nested_not(12)


def test_more_than_200_nodes_is_refused():
    leaf = {"trait": "plan", "op": "eq", "value": "pro"}
    with pytest.raises(ConditionError) as caught:
        validate({"any": [leaf] * 200})
    assert "at most 200 nodes" in caught.value.reason
    assert caught.value.path == "any[199]"


def test_context_is_refused_for_segments_but_accepted_for_rules():
    # Given a condition on the request's context
    tree = {"all": [{"context": "device", "op": "eq", "value": "mobile"}]}

    # When it is validated as a segment condition / Then it is refused, naming the node
    with pytest.raises(ConditionError) as caught:
        validate(tree)
    assert caught.value.path == "all[0].context"
    assert "only for rules" in caught.value.reason

    # When it is validated for a rule / Then it is accepted
    assert validate(tree, allow_context=True) == tree


def test_unknown_context_key_is_refused_even_for_rules():
    with pytest.raises(ConditionError) as caught:
        validate({"context": "shoe_size", "op": "eq", "value": 1}, allow_context=True)
    assert caught.value.path == "context"
    assert "unknown context" in caught.value.reason


@pytest.mark.parametrize(
    "tree",
    [
        {"all": []},
        {"trait": "plan", "op": "exists"},
        {"trait": "plan", "op": "exists", "value": True},
        {"attr": "purchase_count", "op": "between", "value": [1, 3]},
        {
            "event": "add_to_cart",
            "within": "24h",
            "where": [{"property": "category", "op": "eq", "value": "shoes"}],
            "measure": {"fn": "sum", "property": "price", "op": "gte", "value": 100.5},
        },
        {"event": "$page", "within": "4w", "measure": {"fn": "count", "op": "lt", "value": 5}},
        {"segment": "cart-abandoners"},
        {"score": "churn", "op": "between", "value": [0.5, 1]},
        {"consent": "marketing"},
        {"not": {"any": [{"trait": "city", "op": "in", "value": ["Oslo", "Bergen", 1]}]}},
    ],
)
def test_good_trees_are_accepted_unchanged(tree):
    assert validate(tree) == tree


# --- evaluation semantics -----------------------------------------------------------------


def ev(name: str, hours_ago: float = 1, **props: Any) -> EventFact:
    return EventFact(name, NOW - timedelta(hours=hours_ago), props)


def matches(tree: dict[str, Any], **facts: Any) -> bool:
    validate(tree)
    return evaluate(tree, Facts(**facts), NOW)


def test_missing_trait_with_neq_matches_and_with_eq_does_not():
    # Given a profile without a "plan" trait
    # Then "plan != pro" is true, "plan == pro" and "plan exists" are false
    assert matches({"trait": "plan", "op": "neq", "value": "pro"})
    assert matches({"trait": "plan", "op": "not_in", "value": ["pro"]})
    assert not matches({"trait": "plan", "op": "eq", "value": "pro"})
    assert not matches({"trait": "plan", "op": "exists"})
    assert not matches({"trait": "plan", "op": "gt", "value": "a"})


def test_null_trait_behaves_like_a_missing_one():
    traits = {"plan": None}
    assert matches({"trait": "plan", "op": "neq", "value": "pro"}, traits=traits)
    assert not matches({"trait": "plan", "op": "exists"}, traits=traits)
    assert not matches({"trait": "plan", "op": "lt", "value": "z"}, traits=traits)


def test_values_compare_with_their_type():
    # "1" is not 1, true is not 1, but 1 equals 1.0
    assert not matches({"trait": "n", "op": "eq", "value": 1}, traits={"n": "1"})
    assert matches({"trait": "n", "op": "neq", "value": 1}, traits={"n": "1"})
    assert not matches({"trait": "n", "op": "eq", "value": 1}, traits={"n": True})
    assert not matches({"trait": "n", "op": "eq", "value": True}, traits={"n": 1})
    assert not matches({"trait": "n", "op": "in", "value": [1, "x"]}, traits={"n": True})
    assert matches({"trait": "n", "op": "eq", "value": True}, traits={"n": True})
    assert matches({"trait": "n", "op": "eq", "value": 1}, traits={"n": 1.0})
    # order comparisons do not mix numbers and strings
    assert not matches({"trait": "n", "op": "gt", "value": 1}, traits={"n": "5"})
    assert not matches({"trait": "n", "op": "between", "value": [1, 9]}, traits={"n": "5"})


def test_strings_order_by_code_point():
    assert matches({"trait": "city", "op": "gt", "value": "Bergen"}, traits={"city": "Oslo"})
    # upper case sorts before lower case
    assert matches({"trait": "city", "op": "lt", "value": "oslo"}, traits={"city": "Oslo"})
    assert matches({"trait": "n", "op": "lt", "value": "9"}, traits={"n": "10"})


def test_contains_and_startswith_are_case_sensitive():
    traits = {"email_domain": "Example.com"}
    assert matches({"trait": "email_domain", "op": "contains", "value": "ample"}, traits=traits)
    assert not matches(
        {"trait": "email_domain", "op": "contains", "value": "EXAMPLE"}, traits=traits
    )
    assert matches({"trait": "email_domain", "op": "startswith", "value": "Ex"}, traits=traits)
    assert not matches({"trait": "email_domain", "op": "startswith", "value": "ex"}, traits=traits)
    # not on numbers
    assert not matches({"trait": "n", "op": "contains", "value": "1"}, traits={"n": 12})


def test_count_of_no_events_is_zero():
    assert matches({"event": "purchase", "measure": {"fn": "count", "op": "eq", "value": 0}})
    assert matches({"event": "purchase", "measure": {"fn": "count", "op": "lt", "value": 1}})
    assert not matches({"event": "purchase"})  # default: at least one


def test_sum_of_no_events_is_zero_and_avg_min_max_never_match():
    none = {"events": [ev("page_view")]}
    assert matches(
        {"event": "purchase", "measure": {"fn": "sum", "property": "p", "op": "eq", "value": 0}},
        **none,
    )
    for fn in ("avg", "min", "max"):
        for op, value in (("lt", 1), ("gte", 0), ("eq", 0), ("neq", 5)):
            tree = {
                "event": "purchase",
                "measure": {"fn": fn, "property": "p", "op": op, "value": value},
            }
            assert not matches(tree, **none), (fn, op)


def test_measures_use_numeric_property_values_only():
    events = [
        ev("purchase", price=10),
        ev("purchase", price=30.5),
        ev("purchase", price="100"),
        ev("purchase", price=True),
        ev("purchase"),
    ]

    def m(fn: str, op: str, value: Any) -> bool:
        tree = {
            "event": "purchase",
            "measure": {"fn": fn, "property": "price", "op": op, "value": value},
        }
        return matches(tree, events=events)

    assert m("sum", "eq", 40.5)
    assert m("avg", "eq", 20.25)
    assert m("min", "eq", 10)
    assert m("max", "eq", 30.5)
    assert matches(
        {"event": "purchase", "measure": {"fn": "count", "op": "eq", "value": 5}}, events=events
    )


def test_within_window_counts_only_recent_events():
    events = [ev("add_to_cart", hours_ago=25), ev("add_to_cart", hours_ago=23.5)]
    assert matches({"event": "add_to_cart", "within": "24h"}, events=events)
    assert not matches(
        {
            "event": "add_to_cart",
            "within": "24h",
            "measure": {"fn": "count", "op": "gte", "value": 2},
        },
        events=events,
    )
    assert not matches({"event": "add_to_cart", "within": "30m"}, events=events)
    assert matches(
        {
            "event": "add_to_cart",
            "within": "2d",
            "measure": {"fn": "count", "op": "eq", "value": 2},
        },
        events=events,
    )
    # no window: all time
    assert matches(
        {"event": "add_to_cart", "measure": {"fn": "count", "op": "eq", "value": 2}}, events=events
    )


def test_future_events_are_ignored():
    events = [ev("purchase", hours_ago=-1)]
    assert not matches({"event": "purchase"}, events=events)
    assert not matches({"event": "purchase", "within": "1w"}, events=events)


def test_where_filters_events_by_property():
    events = [
        ev("add_to_cart", category="shoes"),
        ev("add_to_cart", category="Shoes"),
        ev("add_to_cart"),
    ]
    tree = {
        "event": "add_to_cart",
        "where": [{"property": "category", "op": "eq", "value": "shoes"}],
        "measure": {"fn": "count", "op": "eq", "value": 1},
    }
    assert matches(tree, events=events)
    missing = {
        "event": "add_to_cart",
        "where": [{"property": "category", "op": "neq", "value": "shoes"}],
        "measure": {"fn": "count", "op": "eq", "value": 2},
    }
    assert matches(missing, events=events)


def test_segment_score_consent_and_attr_nodes():
    assert matches({"segment": "vip"}, segments={"vip"})
    assert not matches({"segment": "vip"}, segments={"other"})
    assert matches({"score": "churn", "op": "gte", "value": 0.7}, scores={"churn": 0.7})
    assert not matches({"score": "churn", "op": "gte", "value": 0.7})
    assert matches({"consent": "marketing"}, consent={"marketing": True})
    assert not matches({"consent": "marketing"}, consent={"marketing": False})
    assert not matches({"consent": "marketing"})
    assert matches({"attr": "purchase_count", "op": "gte", "value": 3}, attrs={"purchase_count": 3})
    assert not matches({"attr": "days_since_last_purchase", "op": "lt", "value": 3}, attrs={})
    assert matches({"attr": "days_since_last_purchase", "op": "neq", "value": 3}, attrs={})


def test_boolean_combinators():
    pro = {"trait": "plan", "op": "eq", "value": "pro"}
    oslo = {"trait": "city", "op": "eq", "value": "Oslo"}
    traits = {"plan": "pro", "city": "Bergen"}
    assert not matches({"all": [pro, oslo]}, traits=traits)
    assert matches({"any": [pro, oslo]}, traits=traits)
    assert matches({"not": oslo}, traits=traits)
    assert matches({"all": []})
    assert not matches({"any": []})


def test_explain_names_the_node_that_failed():
    # Given a segment "pro customers who bought in the last week" and a pro who did not buy
    tree = {
        "all": [
            {"trait": "plan", "op": "eq", "value": "pro"},
            {"event": "purchase", "within": "7d"},
        ]
    }
    facts = Facts(traits={"plan": "pro"}, events=[ev("purchase", hours_ago=24 * 8)])

    # When we ask why
    lines = explain(tree, facts, NOW)

    # Then every node is listed with its result, and the failing one says what it saw
    by_path = {path: (ok, detail) for path, ok, detail in lines}
    assert set(by_path) == {"all[0]", "all[1]", "(root)"}
    assert by_path["all[0]"] == (True, "trait plan = 'pro'")
    assert by_path["all[1]"][0] is False
    assert "count of purchase = 0" in by_path["all[1]"][1]
    assert by_path["(root)"] == (False, "all of 2: 1 true")
    assert evaluate(tree, facts, NOW) is False


def test_explain_shows_missing_trait():
    lines = explain({"not": {"trait": "plan", "op": "exists"}}, Facts(), NOW)
    assert lines == [("not", False, "trait plan = (missing)"), ("(root)", True, "not")]
