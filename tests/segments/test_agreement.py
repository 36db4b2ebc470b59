"""The SQL compiler and the in-memory evaluator agree on every input.

Hypothesis generates condition trees over every node kind and operator, and profiles
with traits, computed attributes, events (bots and future ones included), segment
memberships, model scores and consent histories; both evaluators must select exactly
the same profiles.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.models import ConsentRecord, Purpose
from profiles.models import Event, Profile
from profiles.services import source_create
from segments.compiler import matching_ids
from segments.conditions import evaluate, explain, validate
from segments.models import Membership, ProfileScore, Segment
from segments.selectors import profile_facts

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TRAIT_KEYS = ["plan", "age", "city", "vip"]
PROP_KEYS = ["price", "category"]
EVENTS = ["add_to_cart", "purchase", "$page"]

scalars = st.one_of(
    st.sampled_from(["pro", "free", "Oslo", "oslo", "", "Ösel", "10"]),
    st.integers(min_value=-3, max_value=12),
    st.sampled_from([0.5, 2.5, -1.5, 10.0]),
    st.booleans(),
)
json_values = st.one_of(scalars, st.none())
numbers = st.one_of(st.integers(min_value=-2, max_value=12), st.sampled_from([0.5, 2.5, 7.5]))


def comparison(value_strategy=scalars):
    single = st.tuples(
        st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte", "contains", "startswith"]),
        value_strategy,
    )
    listy = st.tuples(
        st.sampled_from(["in", "not_in"]), st.lists(value_strategy, min_size=1, max_size=3)
    )
    between = st.tuples(st.just("between"), st.tuples(numbers, numbers).map(sorted).map(list))
    exists = st.tuples(st.just("exists"), st.just(None))
    return st.one_of(single, listy, between, exists)


def _cmp(node: dict, op_value) -> dict | None:
    op, value = op_value
    node = {**node, "op": op}
    if op != "exists":
        node["value"] = value
    try:
        validate(node)
    except ValueError:
        return None
    return node


traits = st.builds(lambda k, ov: _cmp({"trait": k}, ov), st.sampled_from(TRAIT_KEYS), comparison())
attrs = st.builds(
    lambda k, ov: _cmp({"attr": k}, ov),
    st.sampled_from(
        [
            "event_count",
            "purchase_count",
            "revenue",
            "rfm_recency",
            "days_since_last_seen",
            "days_since_last_purchase",
            "engagement_score",
        ]
    ),
    comparison(numbers),
)
where = st.builds(lambda k, ov: _cmp({"property": k}, ov), st.sampled_from(PROP_KEYS), comparison())
measures = st.one_of(
    st.none(),
    st.builds(
        lambda ov: {"fn": "count", "op": ov[0], "value": ov[1]},
        st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), st.integers(0, 4)),
    ),
    st.builds(
        lambda fn, ov: {"fn": fn, "property": "price", "op": ov[0], "value": ov[1]},
        st.sampled_from(["sum", "avg", "min", "max"]),
        st.tuples(st.sampled_from(["eq", "neq", "gt", "gte", "lt", "lte"]), numbers),
    ),
)


def _event(name, within, wheres, measure):
    node: dict = {"event": name}
    if within:
        node["within"] = within
    ws = [w for w in wheres if w is not None]
    if ws:
        node["where"] = ws
    if measure:
        node["measure"] = measure
    validate(node)
    return node


events_nodes = st.builds(
    _event,
    st.sampled_from(EVENTS),
    st.sampled_from([None, "30m", "24h", "3d"]),
    st.lists(where, max_size=2),
    measures,
)
leaves = st.one_of(
    traits.filter(lambda n: n is not None),
    attrs.filter(lambda n: n is not None),
    events_nodes,
    st.builds(lambda s: {"segment": s}, st.sampled_from(["seg-a", "seg-b"])),
    st.builds(
        lambda ov: _cmp({"score": "churn"}, ov),
        st.tuples(st.sampled_from(["gt", "gte", "lt", "lte", "exists"]), numbers),
    ).filter(lambda n: n is not None),
    # a clustering's score: the cluster number, compared for equality
    st.builds(
        lambda n: {"score": "churn", "op": "eq", "value": n}, st.sampled_from([0, 1, 2, 0.5])
    ),
    st.builds(
        lambda ns: {"score": "churn", "op": "in", "value": ns},
        st.lists(st.integers(0, 2), min_size=1, max_size=3),
    ),
    st.builds(
        lambda c: {"consent": c}, st.sampled_from(["analytics", "marketing", "personalization"])
    ),
)
conditions = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(children, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(children, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)

event_st = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*EVENTS, "viewed"]),
        "minutes_ago": st.integers(min_value=-60, max_value=60 * 24 * 5),
        "props": st.dictionaries(st.sampled_from(PROP_KEYS), json_values, max_size=2),
        "bot": st.booleans(),
    }
)
profile_st = st.fixed_dictionaries(
    {
        "traits": st.dictionaries(st.sampled_from(TRAIT_KEYS), json_values, max_size=4),
        "event_count": st.integers(0, 6),
        "purchase_count": st.integers(0, 3),
        "revenue": st.sampled_from([Decimal("0"), Decimal("2.5"), Decimal("10"), Decimal("7.5")]),
        "rfm_recency": st.one_of(st.none(), st.integers(1, 5)),
        "last_seen_days": st.one_of(st.none(), st.integers(0, 9)),
        "last_purchase_days": st.one_of(st.none(), st.integers(0, 9)),
        # (score, seconds ago incl. fractions and the future): decayed, then compared
        "engagement": st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from([0.0, 1.0, 2.5, 3.0, 7.3, 10.0, 12.5]),
                st.sampled_from([0, 0.5, 1, 59.9, 3600, 14 * 86400, 14 * 86400 + 0.25, -30]),
            ),
        ),
        "events": st.lists(event_st, max_size=5),
        "segments": st.sets(st.sampled_from(["seg-a", "seg-b"])),
        "score": st.one_of(st.none(), numbers),
        "consent": st.lists(
            st.tuples(
                st.sampled_from(["analytics", "marketing", "personalization"]),
                st.booleans(),
                st.integers(0, 3),
                st.booleans(),
            ),
            max_size=3,
        ),
    }
)


@pytest.mark.django_db
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(condition=conditions, people=st.lists(profile_st, min_size=1, max_size=5))
def test_sql_and_memory_evaluators_agree(condition, people):
    validate(condition)
    source = source_create(name=f"s-{uuid.uuid4()}").source
    with transaction.atomic():
        segs = {
            slug: Segment.objects.create(slug=slug, name=slug, condition={"all": []})
            for slug in ("seg-a", "seg-b")
        }
        purposes = {p.code: p for p in Purpose.objects.all()}
        ids = []
        for n, person in enumerate(people):
            p = Profile.objects.create(
                traits=person["traits"],
                event_count=person["event_count"],
                purchase_count=person["purchase_count"],
                revenue=person["revenue"],
                rfm_recency=person["rfm_recency"],
                last_seen_at=None
                if person["last_seen_days"] is None
                else NOW - timedelta(days=person["last_seen_days"], hours=3),
                last_purchase_at=None
                if person["last_purchase_days"] is None
                else NOW - timedelta(days=person["last_purchase_days"]),
                engagement_score=0.0 if person["engagement"] is None else person["engagement"][0],
                engagement_as_of=None
                if person["engagement"] is None
                else NOW - timedelta(seconds=person["engagement"][1]),
            )
            ids.append(p.pk)
            for i, e in enumerate(person["events"]):
                type_ = "page" if e["name"] == "$page" else "track"
                Event.objects.create(
                    source=source,
                    message_id=f"{p.pk}-{i}",
                    profile=p,
                    type=type_,
                    event="Home" if type_ == "page" else e["name"],
                    timestamp=NOW - timedelta(minutes=e["minutes_ago"]),
                    received_at=NOW,
                    properties=e["props"],
                    is_bot=e["bot"],
                )
            for slug in person["segments"]:
                Membership.objects.create(segment=segs[slug], profile=p, since=NOW)
            if person["score"] is not None:
                ProfileScore.objects.create(
                    profile=p, model="churn", score=person["score"], computed_at=NOW
                )
            for code, granted, days_ago, expired in person["consent"]:
                ConsentRecord.objects.create(
                    profile=p,
                    purpose=purposes[code],
                    granted=granted,
                    source="api",
                    policy_version="v",
                    recorded_at=NOW - timedelta(days=days_ago, minutes=n),
                    expires_at=NOW - timedelta(days=1) if expired else None,
                )
        # a merged-away profile never matches
        Profile.objects.create(traits=people[0]["traits"], merged_into_id=ids[0])

        by_sql = set(matching_ids(condition, now=NOW))
        facts = profile_facts(profile_ids=ids, now=NOW)
        by_memory = {pid for pid, f in facts.items() if evaluate(condition, f, NOW)}
        # the admin's "why" trace reaches the same verdict as the fast evaluator
        explained = {
            pid
            for pid, f in facts.items()
            if dict((p, r) for p, r, _ in explain(condition, f, NOW))["(root)"]
        }
        transaction.set_rollback(True)
    assert by_sql == by_memory, condition
    assert explained == by_memory, condition
