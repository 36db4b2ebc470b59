"""The decision for one slot, in memory (rules.engine.decide_slot): consent → providers →
control group → the slot's strategy over its rules → its default; schedule windows,
frequency caps and the reasons a marketer reads. Also the condition in words
(segments.conditions.describe). No database."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rules.engine import (
    CompiledRule,
    CompiledSlot,
    SlotDecision,
    cap_key,
    decide_slot,
    in_control,
)
from segments.conditions import EventFact, Facts, describe

NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)  # a Wednesday
EVERYONE: dict[str, Any] = {"all": []}
NOBODY: dict[str, Any] = {"any": []}
MOBILE = {"context": "device", "op": "eq", "value": "mobile"}
PRO = {"trait": "plan", "op": "eq", "value": "pro"}
CART = {
    "all": [
        {"event": "add_to_cart", "within": "24h"},
        {"not": {"event": "purchase", "within": "24h"}},
    ]
}

_ids = itertools.count(1)


def rule(key: str, condition: Any = EVERYONE, **fields: Any) -> CompiledRule:
    """A compiled rule as rules.selectors builds it (description from the condition)."""
    return CompiledRule(
        id=fields.pop("id", next(_ids)),
        key=key,
        name=fields.pop("name", key.replace("-", " ").capitalize()),
        condition=condition,
        description=describe(condition),
        variant=fields.pop("variant", key),
        priority=fields.pop("priority", 0),
        **fields,
    )


def slot(
    *rules: CompiledRule,
    strategy: str = "first_match",
    control_percent: float = 0.0,
    default: str | None = "welcome",
    key: str = "home_hero",
) -> CompiledSlot:
    """A slot whose rules are given in the order rules_config_load gives them."""
    variants: dict[str, dict[str, Any]] = {"welcome": {"title": "Welcome"}}
    for r in rules:
        variants[r.variant] = {"title": f"Variant {r.variant}"}
    return CompiledSlot(
        key=key,
        strategy=strategy,
        control_percent=control_percent,
        default_variant=default,
        variants=variants,
        rules=tuple(rules),
    )


def decide(
    the_slot: CompiledSlot,
    facts: Facts | None = None,
    *,
    now: datetime = NOW,
    visitor: str = "visitor-1",
    personalization: bool = True,
    caps: dict[str, int] | None = None,
    **kwargs: Any,
) -> SlotDecision:
    return decide_slot(
        the_slot,
        facts or Facts(),
        now,
        visitor=visitor,
        personalization=personalization,
        caps=caps or {},
        **kwargs,
    )


def mobile() -> Facts:
    return Facts(context={"device": "mobile"})


# --- first_match --------------------------------------------------------------------------


def test_first_match_serves_the_highest_priority_rule_that_matches():
    # Given three rules, the highest of which does not match this visitor
    hero = slot(
        rule("pros", PRO, priority=100),
        rule("mobile", MOBILE, priority=50),
        rule("everyone", EVERYONE, priority=10),
    )

    # When a mobile visitor on the free plan is decided for
    decision = decide(hero, Facts(traits={"plan": "free"}, context={"device": "mobile"}))

    # Then the highest matching one wins, with its variant's content
    assert (decision.variant, decision.source) == ("mobile", "rule")
    assert decision.rule is not None
    assert decision.rule.key == "mobile"
    assert decision.content == {"title": "Variant mobile"}
    assert not decision.control


def test_first_match_breaks_priority_ties_by_the_order_the_rules_come_in():
    # Given two matching rules of the same priority, in key order
    hero = slot(rule("a-first", priority=5), rule("b-second", priority=5))

    # Then the first of them is served
    assert decide(hero).variant == "a-first"


def test_the_reason_names_the_rule_and_describes_its_condition():
    # Given a cart-reminder rule and a visitor who added to cart two hours ago
    hero = slot(rule("cart", CART, name="Cart reminder", priority=100))
    facts = Facts(events=[EventFact("add_to_cart", NOW - timedelta(hours=2), {})])

    # When decided / Then the reason is one readable line
    decision = decide(hero, facts)
    assert decision.variant == "cart"
    assert decision.reason == (
        "rule 'Cart reminder' matched: add_to_cart within 24h and no purchase within 24h"
    )
    assert decision.as_json("d-1") == {
        "variant": "cart",
        "content": {"title": "Variant cart"},
        "source": "rule",
        "reason": decision.reason,
        "decision_id": "d-1",
        "rule": "cart",
    }


def test_no_matching_rule_serves_the_default_and_says_how_many_were_tried():
    hero = slot(rule("pros", PRO), rule("mobile", MOBILE))

    decision = decide(hero, Facts(context={"device": "desktop"}))

    assert (decision.variant, decision.source) == ("welcome", "default")
    assert decision.content == {"title": "Welcome"}
    assert decision.rule is None
    assert decision.reason == "no rule matched (2 tried): default variant"


def test_without_a_default_variant_nothing_is_served_and_the_reason_says_so():
    hero = slot(rule("pros", PRO), default=None)

    decision = decide(hero)

    assert decision.variant is None
    assert decision.content == {}
    assert decision.source == "default"
    assert decision.reason == "no rule matched (1 tried); the slot has no default variant"
    assert decision.as_json("d")["variant"] is None


# --- score_sorted -------------------------------------------------------------------------


def test_score_sorted_serves_the_matching_rule_with_the_highest_summed_points():
    # Given a high-priority rule worth 5 points to this visitor and a low-priority one
    # worth 3 + 4, and a rule that would score 100 but does not match
    guides = rule(
        "guides",
        priority=10,
        scoring=((MOBILE, 5.0), (PRO, 100.0)),
    )
    arrivals = rule(
        "arrivals",
        priority=1,
        scoring=((MOBILE, 3.0), ({"context": "page", "op": "startswith", "value": "/blog"}, 4.0)),
    )
    never = rule("never", NOBODY, priority=50, scoring=((EVERYONE, 100.0),))
    feed = slot(never, guides, arrivals, strategy="score_sorted")

    # When a mobile visitor reading the blog is decided for
    decision = decide(feed, Facts(context={"device": "mobile", "page": "/blog/shoes"}))

    # Then the points decide, not the priority, and only matching rules count
    assert decision.variant == "arrivals"
    assert decision.reason.endswith("(score 7, highest of 2 matching)")
    assert decision.reason.startswith("rule 'Arrivals' matched: always")


def test_score_sorted_ties_go_to_the_higher_priority_then_the_key():
    # Given equal scores
    low = rule("low", priority=1, scoring=((EVERYONE, 5.0),))
    high = rule("high", priority=9, scoring=((EVERYONE, 5.0),))
    assert decide(slot(high, low, strategy="score_sorted")).variant == "high"

    # and equal scores and priorities
    beta = rule("beta", priority=3, scoring=((EVERYONE, 2.0),))
    alpha = rule("alpha", priority=3, scoring=((EVERYONE, 2.0),))
    assert decide(slot(alpha, beta, strategy="score_sorted")).variant == "alpha"


def test_score_sorted_without_any_match_serves_the_default():
    feed = slot(rule("pros", PRO, scoring=((EVERYONE, 10.0),)), strategy="score_sorted")
    decision = decide(feed)
    assert (decision.variant, decision.source) == ("welcome", "default")


# --- random -------------------------------------------------------------------------------


def test_random_picks_only_among_matching_rules_by_weight():
    # Given two matching rules weighted 3:1 and a heavy one that does not match
    strip = slot(
        rule("shipping", weight=3.0),
        rule("newsletter", weight=1.0),
        rule("pros-only", PRO, weight=100.0),
        strategy="random",
    )
    rng = random.Random(20250312)

    # When many visitors are decided for
    draws = Counter(decide(strip, rng=rng).variant for _ in range(4000))

    # Then the non-matching rule never shows and the shares follow the weights
    assert set(draws) == {"shipping", "newsletter"}
    assert 0.70 < draws["shipping"] / 4000 < 0.80
    sample = decide(strip, rng=rng)
    assert sample.source == "rule"
    assert sample.reason.endswith("(picked at random among 2 matching)")


def test_random_never_picks_a_weight_zero_rule_beside_a_positive_one():
    strip = slot(rule("paused", weight=0.0), rule("live", weight=0.5), strategy="random")
    rng = random.Random(7)
    assert {decide(strip, rng=rng).variant for _ in range(1000)} == {"live"}


def test_random_with_one_matching_rule_always_serves_it():
    strip = slot(rule("pros", PRO), rule("mobile", MOBILE), strategy="random")
    rng = random.Random(1)
    picks = {decide(strip, mobile(), rng=rng).variant for _ in range(200)}
    assert picks == {"mobile"}
    assert "picked at random" not in decide(strip, mobile(), rng=rng).reason


# --- schedule windows ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("starts_at", "ends_at", "served"),
    [
        (None, None, True),
        (NOW, None, True),  # starts_at is inclusive
        (NOW + timedelta(seconds=1), None, False),
        (None, NOW, False),  # ends_at is exclusive
        (None, NOW + timedelta(seconds=1), True),
        (NOW - timedelta(days=2), NOW - timedelta(days=1), False),
        (NOW - timedelta(days=1), NOW + timedelta(days=1), True),
    ],
)
def test_a_rule_is_served_only_inside_its_window(starts_at, ends_at, served):
    hero = slot(rule("sale", starts_at=starts_at, ends_at=ends_at))

    decision = decide(hero)

    assert (decision.variant == "sale") is served
    if not served:
        assert decision.reason == "no rule matched (0 tried): default variant"


def test_a_rule_outside_its_window_lets_the_next_one_serve():
    hero = slot(
        rule("sale", priority=10, ends_at=NOW - timedelta(hours=1)),
        rule("everyday", priority=1),
    )
    assert decide(hero).variant == "everyday"
    assert decide(hero, now=NOW - timedelta(hours=2)).variant == "sale"


# --- frequency caps -----------------------------------------------------------------------


def test_a_rule_at_its_cap_is_skipped_and_the_reason_says_so():
    # Given a rule capped at 3 a day that this visitor has seen 3 times today
    capped = rule("cart", CART, name="Cart reminder", cap_count=3, cap_per="day")
    hero = slot(capped)
    facts = Facts(events=[EventFact("add_to_cart", NOW - timedelta(minutes=5), {})])
    caps = {cap_key("visitor-1", capped, NOW): 3}

    # When decided / Then the default is served, and the reason names the cap
    decision = decide(hero, facts, caps=caps)
    assert decision.variant == "welcome"
    assert "'Cart reminder' reached its cap of 3 per day" in decision.reason

    # While another visitor, and this one below the cap, still get the rule
    assert decide(hero, facts, caps=caps, visitor="visitor-2").variant == "cart"
    below = {cap_key("visitor-1", capped, NOW): 2}
    assert decide(hero, facts, caps=below).variant == "cart"


def test_a_capped_rule_gives_way_to_the_next_matching_rule():
    capped = rule("cart", priority=10, cap_count=1, cap_per="session")
    hero = slot(capped, rule("everyday", priority=1))

    decision = decide(hero, caps={cap_key("visitor-1", capped, NOW): 1})

    assert decision.variant == "everyday"


def test_yesterdays_impressions_do_not_count_against_todays_cap():
    capped = rule("cart", cap_count=2, cap_per="day")
    hero = slot(capped)
    yesterday = {cap_key("visitor-1", capped, NOW - timedelta(days=1)): 2}
    assert decide(hero, caps=yesterday).variant == "cart"


def test_cap_counters_are_per_visitor_rule_and_period():
    day = rule("d", cap_count=1, cap_per="day")
    week = rule("w", cap_count=1, cap_per="week")
    session = rule("s", cap_count=1, cap_per="session")
    monday = datetime(2025, 3, 10, 0, 5, tzinfo=UTC)
    sunday = datetime(2025, 3, 16, 23, 55, tzinfo=UTC)
    next_monday = datetime(2025, 3, 17, 0, 5, tzinfo=UTC)

    # A day counter is the same all day and new the next day
    assert cap_key("v", day, monday) == cap_key("v", day, monday + timedelta(hours=20))
    assert cap_key("v", day, monday) != cap_key("v", day, monday + timedelta(days=1))
    # A week counter is the same Monday to Sunday and new the next Monday
    assert cap_key("v", week, monday) == cap_key("v", week, sunday)
    assert cap_key("v", week, sunday) != cap_key("v", week, next_monday)
    # A session counter does not change with the date (it expires with inactivity)
    assert cap_key("v", session, monday) == cap_key("v", session, next_monday)
    # The periods differ from one another, and counters never mix visitors or rules
    keys = {cap_key("v", r, monday) for r in (day, week, session)}
    assert len(keys) == 3
    assert cap_key("v", day, monday) != cap_key("w", day, monday)
    other_day_rule = rule("d2", cap_count=1, cap_per="day")
    assert cap_key("v", day, monday) != cap_key("v", other_day_rule, monday)


# --- control group ------------------------------------------------------------------------


def test_the_control_group_is_sticky_and_about_the_configured_share():
    # Given a slot with a 10% control group and a rule everyone matches
    hero = slot(rule("everyone"), control_percent=10.0)
    visitors = [f"visitor-{i}" for i in range(10_000)]

    # When every visitor is decided for, twice
    first = {v: decide(hero, visitor=v) for v in visitors}
    again = {v: decide(hero, visitor=v) for v in visitors}

    # Then about one in ten are in control, the same ones each time
    control = {v for v, d in first.items() if d.control}
    assert control == {v for v, d in again.items() if d.control}
    assert 850 < len(control) < 1150
    # and they get the default, with the reason, while the others get the rule
    some = next(iter(control))
    assert (first[some].variant, first[some].source) == ("welcome", "default")
    assert first[some].reason == "control group (10% of visitors): default variant"
    assert all(d.variant == "everyone" for v, d in first.items() if v not in control)


def test_control_groups_of_different_slots_hold_different_visitors():
    hero = slot(rule("a"), control_percent=50.0, key="home_hero")
    note = slot(rule("b"), control_percent=50.0, key="product_note")
    visitors = [f"v{i}" for i in range(2000)]
    in_hero = {v for v in visitors if in_control(hero, v)}
    in_note = {v for v in visitors if in_control(note, v)}
    assert in_hero != in_note
    assert in_hero & in_note  # independent: some are in both


@pytest.mark.parametrize(("percent", "share"), [(0.0, 0), (100.0, 1)])
def test_control_percent_at_the_ends(percent, share):
    hero = slot(rule("everyone"), control_percent=percent)
    controls = sum(decide(hero, visitor=f"v{i}").control for i in range(500))
    assert controls == 500 * share


# --- consent and providers ----------------------------------------------------------------


def test_without_personalization_consent_the_default_is_served():
    # Given a rule that matches and an experiment that would answer
    asked: list[str] = []

    def experiment(s: CompiledSlot, facts: Facts, now: datetime, visitor: str) -> None:
        asked.append(visitor)

    hero = slot(rule("everyone"))

    # When the visitor has not consented to personalization
    decision = decide(hero, personalization=False, providers=[experiment])

    # Then they get the default, the reason says why, and no experiment is consulted
    assert (decision.variant, decision.source) == ("welcome", "default")
    assert decision.reason == "no personalization consent: default variant"
    assert not decision.control
    assert asked == []


def test_a_provider_answers_before_the_control_group_and_the_rules():
    # Given an experiment running on the hero slot, and a 100% control group
    seen: list[tuple[str, str, datetime, str]] = []

    def experiment(s: CompiledSlot, facts: Facts, now: datetime, visitor: str) -> SlotDecision:
        seen.append((s.key, facts.context.get("device", ""), now, visitor))
        return SlotDecision(
            s.key,
            "b",
            {"title": "B"},
            "experiment",
            "experiment 'hero-test': variant b",
            experiment={"key": "hero-test", "variant": "b"},
        )

    hero = slot(rule("everyone"), control_percent=100.0)

    # When decided
    decision = decide(hero, mobile(), visitor="v-9", providers=[experiment])

    # Then the experiment's answer is served, and it saw the slot, facts, time and visitor
    assert (decision.variant, decision.source) == ("b", "experiment")
    assert decision.as_json("d")["experiment"] == {"key": "hero-test", "variant": "b"}
    assert seen == [("home_hero", "mobile", NOW, "v-9")]


def test_a_provider_with_nothing_to_say_leaves_the_slot_to_its_rules():
    def not_mine(s: CompiledSlot, facts: Facts, now: datetime, visitor: str) -> None:
        return None

    hero = slot(rule("mobile", MOBILE))
    assert decide(hero, mobile(), providers=[not_mine]).variant == "mobile"


# --- the condition in words ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "text"),
    [
        (EVERYONE, "always"),
        (NOBODY, "never"),
        (PRO, 'plan is "pro"'),
        ({"trait": "plan", "op": "neq", "value": "free"}, 'plan is not "free"'),
        ({"trait": "plan", "op": "in", "value": ["pro", "team"]}, 'plan in ["pro", "team"]'),
        ({"trait": "email", "op": "exists"}, "email is set"),
        ({"trait": "vip", "op": "eq", "value": True}, "vip is true"),
        ({"trait": "city", "op": "contains", "value": "ber"}, 'city contains "ber"'),
        ({"attr": "purchase_count", "op": "gte", "value": 3}, "purchase_count ≥ 3"),
        ({"attr": "revenue", "op": "between", "value": [10, 99.5]}, "revenue between 10 and 99.5"),
        ({"attr": "days_since_last_seen", "op": "lt", "value": 7}, "days_since_last_seen < 7"),
        ({"event": "purchase"}, "purchase"),
        ({"event": "add_to_cart", "within": "24h"}, "add_to_cart within 24h"),
        (
            {
                "event": "product_viewed",
                "within": "1h",
                "measure": {"fn": "count", "op": "gte", "value": 3},
            },
            "count of product_viewed within 1h ≥ 3",
        ),
        (
            {
                "event": "purchase",
                "within": "30d",
                "where": [{"property": "category", "op": "eq", "value": "shoes"}],
                "measure": {"fn": "sum", "property": "price", "op": "gt", "value": 100},
            },
            'sum of price of purchase within 30d where category is "shoes" > 100',
        ),
        ({"segment": "deal-seekers"}, "in segment deal-seekers"),
        ({"score": "churn", "op": "gte", "value": 0.7}, "churn score ≥ 0.7"),
        ({"consent": "marketing"}, "marketing consent"),
        (MOBILE, 'device is "mobile"'),
        ({"context": "page", "op": "startswith", "value": "/blog"}, 'page starts with "/blog"'),
        ({"not": {"event": "purchase", "within": "24h"}}, "no purchase within 24h"),
        ({"not": {"segment": "vips"}}, "not in segment vips"),
        ({"not": {"consent": "marketing"}}, "no marketing consent"),
        ({"not": PRO}, 'not (plan is "pro")'),
        (
            {"not": {"event": "x", "measure": {"fn": "count", "op": "gte", "value": 2}}},
            "not count of x ≥ 2",
        ),
        (CART, "add_to_cart within 24h and no purchase within 24h"),
        (
            {
                "any": [
                    {"context": "hour", "op": "gte", "value": 22},
                    {"context": "hour", "op": "lt", "value": 5},
                ]
            },
            "hour ≥ 22 or hour < 5",
        ),
        (
            {"all": [{"any": [PRO, {"segment": "vips"}]}, MOBILE]},
            '(plan is "pro" or in segment vips) and device is "mobile"',
        ),
        ({"all": [{"any": [PRO]}, MOBILE]}, 'plan is "pro" and device is "mobile"'),
    ],
)
def test_describe_puts_each_node_kind_in_words(condition, text):
    assert describe(condition) == text


def test_describe_refuses_what_is_not_a_condition():
    with pytest.raises(ValueError, match="not a validated condition"):
        describe({"colour": "blue"})
