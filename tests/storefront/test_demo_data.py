"""Demo data: the catalog, the synthetic shoppers (deterministic, persona by persona) and
`seed_demo`, which loads them through ingestion and seeds every app from them."""

from __future__ import annotations

import io
import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Max, Min

from profiles.ingestion import user_agent_is_bot
from profiles.models import Event, Identity, Profile
from recommendations.models import Item, ModelVersion, VersionStatus
from rules.selectors import decision_preview
from segments.models import Membership, Segment
from storefront.catalog import CATEGORIES, PRODUCTS, product, product_properties, products_in
from storefront.personas import PERSONAS, persona_of, shopper_events, shoppers

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
SESSION_GAP = timedelta(minutes=30)


def _ts(event: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def _population(count: int = 300, seed: int = 7) -> dict[str, list[list[dict[str, Any]]]]:
    """Persona key → the event lists of its shoppers."""
    out: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for _, persona, events in shoppers(seed=seed, count=count, now=NOW):
        out[persona.key].append(events)
    return out


def _named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "track" and e["event"] == name]


def _sessions(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = []
    for e in events:
        if not out or _ts(e) - _ts(out[-1][-1]) > SESSION_GAP:
            out.append([])
        out[-1].append(e)
    return out


@pytest.fixture(scope="module")
def population() -> dict[str, list[list[dict[str, Any]]]]:
    return _population()


# --- catalog --------------------------------------------------------------------------


def test_the_catalog_is_a_small_shop_with_deals():
    assert 36 <= len(PRODUCTS) <= 48
    assert 5 <= len(CATEGORIES) <= 6
    assert len({p.id for p in PRODUCTS}) == len(PRODUCTS)
    assert all(products_in(c.slug) for c in CATEGORIES)
    on_sale = [p for p in PRODUCTS if p.on_sale]
    assert len(on_sale) >= 6
    assert all((p.compare_at or 0) > p.price for p in on_sale)
    assert all(p.on_sale == (p.compare_at is not None) for p in PRODUCTS)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", p.color) for p in PRODUCTS)

    p = PRODUCTS[0]
    assert product(p.id) is p
    assert product("nope") is None
    assert product_properties(p) == {
        "product_id": p.id,
        "name": p.name,
        "category": p.category,
        "price": p.price,
        "url": f"/demo/p/{p.id}/",
        "image_url": f"/demo/img/{p.id}.svg",
        "on_sale": False,
    }


# --- determinism ----------------------------------------------------------------------


def test_the_same_seed_gives_the_same_events_and_another_seed_others():
    def run(seed: int, now: datetime) -> list[dict[str, Any]]:
        return [e for _, _, events in shoppers(seed=seed, count=60, now=now) for e in events]

    first, again, other = run(1, NOW), run(1, NOW), run(2, NOW)

    assert first == again
    assert first != other
    assert {e["message_id"] for e in first}.isdisjoint({e["message_id"] for e in other})
    assert len({e["message_id"] for e in first}) == len(first)


def test_a_shopper_does_not_depend_on_the_clock_or_on_who_came_before():
    # Given shopper 42 generated on its own, later, and inside a run of many
    alone = shopper_events(seed=3, n=42, now=NOW)[1]
    later = shopper_events(seed=3, n=42, now=NOW + timedelta(days=5))[1]
    in_run = next(ev for n, _, ev in shoppers(seed=3, count=50, now=NOW) if n == 42)

    # Then the events and their message ids are the same; only the times move with now
    assert alone == in_run
    assert [e["message_id"] for e in alone] == [e["message_id"] for e in later]
    assert _ts(later[0]) - _ts(alone[0]) == timedelta(days=5)


def test_every_hundred_shoppers_hold_each_persona_share():
    for block in range(3):
        keys = [persona_of(seed=9, n=block * 100 + i).key for i in range(100)]
        assert {p.key: keys.count(p.key) for p in PERSONAS} == {p.key: p.share for p in PERSONAS}


# --- personas --------------------------------------------------------------------------


def test_ninety_days_ending_now(population):
    times = [_ts(e) for lists in population.values() for events in lists for e in events]

    assert min(times) >= NOW - timedelta(days=90)
    assert max(times) < NOW
    assert min(times) < NOW - timedelta(days=80)
    assert max(times) > NOW - timedelta(hours=24)
    for lists in population.values():  # each shopper's events oldest first
        for events in lists:
            assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


def test_events_look_like_what_the_storefront_sends(population):
    pages = [e for lists in population.values() for ev in lists for e in ev if e["type"] == "page"]
    paths = {e["context"]["page"]["path"] for e in pages}

    assert {"/demo/", "/demo/cart/", "/demo/checkout/"} <= paths
    assert any(p.startswith("/demo/c/") for p in paths)
    assert any(p.startswith("/demo/p/") for p in paths)
    for e in pages:
        assert e["context"]["page"]["url"].endswith(e["context"]["page"]["path"])
        assert e["name"]
    purchases = [e for lists in population.values() for ev in lists for e in _named(ev, "purchase")]
    for e in purchases:
        assert e["properties"]["currency"] == "EUR"
        assert e["properties"]["revenue"] == sum(
            line["price"] * line["quantity"] for line in e["properties"]["products"]
        )


def test_deal_seekers_look_at_sale_items_and_buy_discounted(population):
    def sale_share(key: str) -> float:
        views = [e for ev in population[key] for e in _named(ev, "product_viewed")]
        return sum(e["properties"]["on_sale"] for e in views) / len(views)

    def views_per_shopper(key: str) -> float:
        lists = population[key]
        return sum(len(_named(ev, "product_viewed")) for ev in lists) / len(lists)

    assert sale_share("deal_seeker") > 0.6
    for key in ("high_intent", "casual_browser", "content_explorer", "loyal_customer"):
        assert sale_share(key) < 0.4, key
    assert views_per_shopper("deal_seeker") > 2 * views_per_shopper("high_intent")
    bought = [
        line
        for ev in population["deal_seeker"]
        for e in _named(ev, "purchase")
        for line in e["properties"]["products"]
    ]
    assert bought
    assert all(line["on_sale"] for line in bought)


def test_high_intent_buyers_view_little_and_buy_fast(population):
    for events in population["high_intent"]:
        assert _named(events, "purchase")
        for session in _sessions(events):
            assert len(_named(session, "product_viewed")) <= 2
            adds = _named(session, "add_to_cart")
            assert adds
            assert _ts(adds[0]) - _ts(session[0]) < timedelta(minutes=3)
            assert _ts(_named(session, "purchase")[0]) - _ts(session[0]) < timedelta(minutes=10)


def test_casual_browsers_see_a_page_or_two_and_hardly_scroll(population):
    for events in population["casual_browser"]:
        for session in _sessions(events):
            assert 1 <= sum(e["type"] == "page" for e in session) <= 2
        assert all(e["properties"]["percent"] <= 25 for e in _named(events, "scroll_depth"))
        assert not _named(events, "add_to_cart")


def test_content_explorers_read_guides_long_and_deep(population):
    def mean_dwell(key: str) -> float:
        dwell = [
            e["properties"]["seconds"] for ev in population[key] for e in _named(ev, "page_dwell")
        ]
        return sum(dwell) / len(dwell)

    for events in population["content_explorer"]:
        paths = {e["context"]["page"]["path"] for e in events if e["type"] == "page"}
        assert any(p.startswith("/demo/journal/") for p in paths)
        assert max(e["properties"]["percent"] for e in _named(events, "scroll_depth")) == 100
    for key in ("deal_seeker", "high_intent", "casual_browser", "loyal_customer"):
        assert mean_dwell("content_explorer") > 2 * mean_dwell(key), key


def test_loyal_customers_log_in_and_buy_three_times_or_more(population):
    for events in population["loyal_customer"]:
        assert len(_named(events, "purchase")) >= 3
        identify = next(e for e in events if e["type"] == "identify")
        n = identify["user_id"].removeprefix("shopper-")
        assert identify["traits"]["email"] == f"shopper-{n}@example.com"
        assert identify["traits"]["persona"] == "loyal_customer"
        after = events[events.index(identify) + 1 :]
        assert all(e["user_id"] == identify["user_id"] for e in after)
        first, last = _ts(events[0]), _ts(_named(events, "purchase")[-1])
        assert last - first > timedelta(days=14)  # repeat purchases over the quarter


def test_cart_abandoners_fill_a_cart_start_checkout_and_leave(population):
    recent = 0
    for events in population["cart_abandoner"]:
        assert _named(events, "add_to_cart")
        assert _named(events, "checkout_started")
        assert not _named(events, "purchase")
        recent += _ts(_named(events, "add_to_cart")[-1]) > NOW - timedelta(hours=24)
    assert 0.3 < recent / len(population["cart_abandoner"]) < 0.7


def test_crawlers_are_bots_and_shoppers_are_not(population):
    for key, lists in population.items():
        for events in lists:
            agents = {e["context"]["user_agent"] for e in events}
            assert all(user_agent_is_bot(a) == (key == "crawler") for a in agents), key


# --- seed_demo -------------------------------------------------------------------------


def _seed(*args: str) -> str:
    out = io.StringIO()
    call_command("seed_demo", "--shoppers", "120", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_seed_demo_fills_every_app_and_a_second_run_adds_nothing():
    # When the demo is seeded with 120 shoppers
    out = _seed("--no-admin-user")

    # Then their events went through ingestion (the crawlers' flagged as bots)
    stored = Event.objects.count()
    assert re.search(rf"120 shoppers .*, {stored} new events, 0 already stored, 0 rejected", out)
    assert Event.objects.filter(is_bot=True).exists()
    assert Identity.objects.filter(kind="user_id", value__startswith="shopper-").exists()
    span = Event.objects.aggregate(first=Min("timestamp"), last=Max("timestamp"))
    assert span["last"] - span["first"] > timedelta(days=80)

    # And every demo segment has members, Cart Abandoners among them
    sizes = {s.slug: Membership.objects.filter(segment=s).count() for s in Segment.objects.all()}
    for slug in ("cart-abandoners", "deal-seekers", "loyal-customers", "casual-browsers"):
        assert sizes[slug] > 0, (slug, sizes)

    # And the cart-reminder rule applies to the cart abandoners
    members = Membership.objects.filter(segment__slug="cart-abandoners").values_list(
        "profile_id", flat=True
    )
    for pid in members[:5]:
        _, slots = decision_preview(profile_id=pid, context={"page": "/demo/"})
        hero = next(s for s in slots if s.slot.key == "home_hero")
        trace = next(t for t in hero.traces if t.rule.key == "cart-reminder")
        assert trace.live
        assert trace.matched

    # And recommendations are trained on the shoppers, over the whole catalog
    assert ModelVersion.objects.filter(outcome=VersionStatus.ACTIVE).exists()
    items = {i.item_id: i for i in Item.objects.all()}
    assert set(items) == {p.id for p in PRODUCTS}
    boot = items["leather-boot"]
    assert boot.title == "Leather Boot"
    assert boot.category == "shoes"
    assert boot.attributes["url"] == "/demo/p/leather-boot/"
    assert boot.attributes["image_url"] == "/demo/img/leather-boot.svg"
    assert boot.attributes["compare_at"] == 249

    # When it is seeded again with the same seed
    profiles = Profile.objects.count()
    again = _seed("--no-admin-user")

    # Then nothing new is stored
    assert ", 0 new events, " in again
    assert Event.objects.count() == stored
    assert Profile.objects.count() == profiles
