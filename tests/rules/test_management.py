"""The management API for slots (with their variants) and rules: the bodies of DESIGN.md
§4, validation that names the field or the condition node, audit entries, the version
bump that makes every process reload, and what segments and demo data have to do with
rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from cdp.models import AuditEvent
from rules import services
from rules.demo import DEMO_RULES, DEMO_SLOTS, demo_rules_ensure
from rules.models import ContentVariant, Rule, Slot
from rules.selectors import rules_config_load
from segments.demo import demo_segments_ensure
from segments.models import Segment
from segments.services import segment_save

pytestmark = pytest.mark.django_db

CART = {
    "all": [
        {"event": "add_to_cart", "within": "24h"},
        {"not": {"event": "purchase", "within": "24h"}},
    ]
}
MOBILE = {"context": "device", "op": "eq", "value": "mobile"}

HERO: dict[str, Any] = {
    "key": "home_hero",
    "description": "The big banner on the home page.",
    "strategy": "first_match",
    "recommendation": {},
    "control_percent": 10.0,
    "default_variant": "welcome",
    "variants": [
        {
            "key": "cart",
            "content": {
                "title": "You left something behind",
                "cta": {"label": "Back to my cart", "url": "https://shop.example/cart"},
            },
        },
        {
            "key": "welcome",
            "content": {
                "title": "New season",
                "body": "Discover this week's arrivals.",
                "image_url": "https://cdn.example/hero.jpg",
                "data": {"theme": "spring"},
            },
        },
    ],
}


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    return body["error"]


def create_slot(client: APIClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/api/v1/slots", body or HERO, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def rule_body(key: str = "cart-reminder", **fields: Any) -> dict[str, Any]:
    return {
        "key": key,
        "slot": "home_hero",
        "name": "Cart reminder",
        "condition": CART,
        "variant": "cart",
        "priority": 100,
        **fields,
    }


def create_rule(client: APIClient, **fields: Any) -> dict[str, Any]:
    response = client.post("/api/v1/rules", rule_body(**fields), format="json")
    assert response.status_code == 201, response.content
    return response.json()


def audit_trail(object_type: str) -> list[tuple[str, str]]:
    return list(
        AuditEvent.objects.filter(object_type=object_type)
        .order_by("id")
        .values_list("action", "actor")
    )


@pytest.fixture
def hero(secret_client) -> dict[str, Any]:
    return create_slot(secret_client)


# --- slots --------------------------------------------------------------------------------


def test_create_and_read_a_slot_with_its_variants(secret_client, source):
    # When a slot is created with two variants
    created = create_slot(secret_client)

    # Then it comes back in the same shape it was given, with no rules yet
    assert created == {**HERO, "rules": []}
    assert secret_client.get("/api/v1/slots/home_hero").json() == created
    assert secret_client.get("/api/v1/slots").json() == [created]
    # and it is audited with the key as the actor
    assert audit_trail("rules.slot") == [("slot.created", f"key:{source.source.slug}")]


def test_slot_list_filters_by_strategy(secret_client, hero):
    create_slot(secret_client, {"key": "promo_strip", "strategy": "random"})

    body = secret_client.get("/api/v1/slots?strategy=random").json()

    assert [s["key"] for s in body] == ["promo_strip"]
    error = error_of(secret_client.get("/api/v1/slots?strategy=best"), 400)
    assert "strategy" in error["details"]


def test_variant_html_is_sanitized_when_saved(secret_client):
    # When a variant's HTML carries a script and an event handler
    body = {
        "key": "product_note",
        "variants": [
            {
                "key": "hesitation",
                "content": {
                    "html": '<p onclick="steal()">Still <strong>deciding</strong>?'
                    "<script>alert(document.cookie)</script></p>"
                    '<a href="javascript:alert(1)">x</a>'
                },
            }
        ],
    }
    created = create_slot(secret_client, body)

    # Then only the harmless markup is stored and served
    html = created["variants"][0]["content"]["html"]
    assert "<strong>deciding</strong>" in html
    assert "script" not in html
    assert "onclick" not in html
    assert "javascript:" not in html
    assert ContentVariant.objects.get(key="hesitation").html == html


def test_put_replaces_the_variants_matching_them_by_key(secret_client, hero, source):
    # Given a rule that shows the "cart" variant
    create_rule(secret_client)
    cart_pk = ContentVariant.objects.get(key="cart").pk

    # When the slot is replaced: "cart" changed, "welcome" dropped, "sale" added
    body = {
        "key": "home_hero",
        "description": "Hero",
        "strategy": "score_sorted",
        "control_percent": 0,
        "default_variant": "sale",
        "variants": [
            {"key": "cart", "content": {"title": "Your cart misses you"}},
            {"key": "sale", "content": {"title": "Sale", "data": {"discount": 30}}},
        ],
    }
    response = secret_client.put("/api/v1/slots/home_hero", body, format="json")

    # Then the slot has exactly those variants, the kept one edited in place
    assert response.status_code == 200, response.content
    assert response.json() == {**body, "recommendation": {}, "rules": ["cart-reminder"]}
    assert ContentVariant.objects.get(key="cart").pk == cart_pk
    assert Rule.objects.get(key="cart-reminder").variant.title == "Your cart misses you"
    assert not ContentVariant.objects.filter(key="welcome").exists()
    assert audit_trail("rules.slot")[-1] == ("slot.updated", f"key:{source.source.slug}")


def test_patch_changes_only_what_it_names(secret_client, hero):
    response = secret_client.patch(
        "/api/v1/slots/home_hero", {"control_percent": 25, "description": "Hero"}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json() == {
        **HERO,
        "control_percent": 25.0,
        "description": "Hero",
        "rules": [],
    }


def test_patch_can_clear_the_default_variant(secret_client, hero):
    response = secret_client.patch(
        "/api/v1/slots/home_hero", {"default_variant": None}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["default_variant"] is None
    assert Slot.objects.get(key="home_hero").default_variant is None


def test_a_variant_a_rule_still_shows_cannot_be_removed(secret_client, hero):
    # Given a rule that shows "cart"
    create_rule(secret_client)

    # When the slot is patched with variants that leave "cart" out (and edit "welcome")
    response = secret_client.patch(
        "/api/v1/slots/home_hero",
        {"variants": [{"key": "welcome", "content": {"title": "Changed"}}]},
        format="json",
    )

    # Then it is refused naming the variant, and nothing changed
    error = error_of(response, 400)
    assert "cart" in error["message"]
    assert error["details"]["variants"] == ["in use by rules: cart"]
    assert secret_client.get("/api/v1/slots/home_hero").json() == {
        **HERO,
        "rules": ["cart-reminder"],
    }


def test_removing_the_default_variant_clears_the_default(secret_client, hero):
    # When the variant that is the slot's default is left out (no rule shows it)
    response = secret_client.patch(
        "/api/v1/slots/home_hero",
        {"variants": [{"key": "cart", "content": {"title": "Cart"}}]},
        format="json",
    )

    # Then the slot has no default any more (the model's SET_NULL), and the answer, a
    # later read and the audit entry all say so rather than name the removed variant
    assert response.status_code == 200, response.content
    stored = secret_client.get("/api/v1/slots/home_hero").json()
    assert [v["key"] for v in stored["variants"]] == ["cart"]
    assert stored["default_variant"] is None
    assert response.json() == stored
    entry = AuditEvent.objects.filter(action="slot.updated").latest("id")
    assert entry.details["default_variant"] is None


def test_the_default_variant_must_be_one_of_the_slots_variants(secret_client, hero):
    # Given another slot with its own variant
    create_slot(
        secret_client,
        {"key": "promo_strip", "variants": [{"key": "newsletter", "content": {"body": "Join"}}]},
    )

    # When a new slot names a default it does not have
    response = secret_client.post(
        "/api/v1/slots", {**HERO, "key": "other", "default_variant": "nope"}, format="json"
    )
    error = error_of(response, 400)
    assert "default_variant" in error["details"]
    assert not Slot.objects.filter(key="other").exists()

    # When a slot names another slot's variant as its default
    response = secret_client.patch(
        "/api/v1/slots/home_hero", {"default_variant": "newsletter"}, format="json"
    )
    assert "default_variant" in error_of(response, 400)["details"]
    default = Slot.objects.get(key="home_hero").default_variant
    assert default is not None
    assert default.key == "welcome"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"strategy": "best_guess"}, "strategy"),
        ({"control_percent": 100.5}, "control_percent"),
        ({"control_percent": -1}, "control_percent"),
        ({"key": "not a slug!"}, "key"),
        ({"variants": [{"key": "a"}, {"key": "a"}]}, "variants"),
        ({"variants": [{"key": "a", "content": {"colour": "red"}}]}, "variants"),
        ({"variants": [{"key": "a", "content": {"cta": {"url": "not a url"}}}]}, "variants"),
    ],
)
def test_a_bad_slot_is_400_naming_the_field(secret_client, change, field):
    response = secret_client.post("/api/v1/slots", {**HERO, **change}, format="json")

    error = error_of(response, 400)
    assert field in error["details"]
    assert not Slot.objects.exists()
    assert not AuditEvent.objects.filter(object_type="rules.slot").exists()


def test_a_slot_key_is_unique_and_cannot_be_changed(secret_client, hero):
    error = error_of(secret_client.post("/api/v1/slots", HERO, format="json"), 400)
    assert "key" in error["details"]
    response = secret_client.patch("/api/v1/slots/home_hero", {"key": "renamed"}, format="json")
    assert "key" in error_of(response, 400)["details"]
    error_of(secret_client.get("/api/v1/slots/renamed"), 404)


def test_deleting_a_slot_takes_its_variants_and_rules(secret_client, hero, source):
    create_rule(secret_client)

    response = secret_client.delete("/api/v1/slots/home_hero")

    assert response.status_code == 204
    assert not Slot.objects.exists()
    assert not ContentVariant.objects.exists()
    assert not Rule.objects.exists()
    assert audit_trail("rules.slot")[-1] == ("slot.deleted", f"key:{source.source.slug}")
    error_of(secret_client.get("/api/v1/slots/home_hero"), 404)


# --- rules --------------------------------------------------------------------------------


def test_create_and_read_a_rule(secret_client, hero, source):
    # When a rule is created with a schedule and a frequency cap
    starts = datetime(2030, 1, 1, 8, tzinfo=UTC)
    body = rule_body(
        starts_at=starts.isoformat(),
        ends_at=(starts + timedelta(days=7)).isoformat(),
        frequency_cap={"count": 3, "per": "day"},
        enabled=False,
    )
    response = secret_client.post("/api/v1/rules", body, format="json")

    # Then it comes back with the same fields (and the defaults of the optional ones)
    assert response.status_code == 201, response.content
    created = response.json()
    assert datetime.fromisoformat(created.pop("starts_at")) == starts
    assert datetime.fromisoformat(created.pop("ends_at")) == starts + timedelta(days=7)
    expected = {k: v for k, v in body.items() if k not in ("starts_at", "ends_at")}
    assert created == {**expected, "scoring": [], "weight": 1.0}
    read = secret_client.get("/api/v1/rules/cart-reminder").json()
    assert {k: v for k, v in read.items() if k not in ("starts_at", "ends_at")} == created
    # the slot lists it, and the change is audited with the key as actor
    assert secret_client.get("/api/v1/slots/home_hero").json()["rules"] == ["cart-reminder"]
    assert audit_trail("rules.rule") == [("rule.created", f"key:{source.source.slug}")]


def test_a_rule_with_scoring_and_weight_round_trips(secret_client, hero):
    scoring = [
        {"condition": {"segment": "vips"}, "points": 10.0},
        {"condition": {"context": "page", "op": "startswith", "value": "/blog"}, "points": 5.0},
    ]
    segment_save(segment=Segment(slug="vips", name="VIPs", condition={"all": []}), actor="test")

    created = create_rule(secret_client, condition={"all": []}, scoring=scoring, weight=2.5)

    assert (created["scoring"], created["weight"]) == (scoring, 2.5)
    assert secret_client.get("/api/v1/rules/cart-reminder").json()["scoring"] == scoring


def test_put_patch_and_delete_a_rule(secret_client, hero, source):
    create_rule(secret_client, frequency_cap={"count": 3, "per": "day"})

    # When the rule is replaced (a PUT without a cap removes it)
    body = rule_body(name="Mobile visitors", condition=MOBILE, variant="welcome", priority=5)
    response = secret_client.put("/api/v1/rules/cart-reminder", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        **body,
        "enabled": True,
        "starts_at": None,
        "ends_at": None,
        "frequency_cap": None,
        "scoring": [],
        "weight": 1.0,
    }

    # When it is patched, only the named fields change
    response = secret_client.patch(
        "/api/v1/rules/cart-reminder",
        {"priority": 7, "frequency_cap": {"count": 1, "per": "session"}},
        format="json",
    )
    assert response.status_code == 200, response.content
    rule = Rule.objects.get(key="cart-reminder")
    assert (rule.name, rule.condition, rule.variant.key, rule.priority) == (
        "Mobile visitors",
        MOBILE,
        "welcome",
        7,
    )
    assert response.json()["frequency_cap"] == {"count": 1, "per": "session"}

    # When it is deleted, it is gone
    assert secret_client.delete("/api/v1/rules/cart-reminder").status_code == 204
    error_of(secret_client.get("/api/v1/rules/cart-reminder"), 404)
    assert not Rule.objects.exists()

    # and every change is audited with the key as the actor
    actor = f"key:{source.source.slug}"
    assert audit_trail("rules.rule") == [
        ("rule.created", actor),
        ("rule.updated", actor),
        ("rule.updated", actor),
        ("rule.deleted", actor),
    ]


def test_rules_are_listed_per_slot_in_the_order_they_are_tried(secret_client, hero):
    create_slot(
        secret_client,
        {"key": "promo_strip", "variants": [{"key": "newsletter", "content": {"body": "Join"}}]},
    )
    create_rule(secret_client, key="b-tie", priority=10)
    create_rule(secret_client, key="a-tie", priority=10)
    create_rule(secret_client, key="top", priority=50, variant="welcome")
    create_rule(secret_client, key="strip", slot="promo_strip", variant="newsletter")

    everything = [r["key"] for r in secret_client.get("/api/v1/rules").json()]
    hero_only = [r["key"] for r in secret_client.get("/api/v1/rules?slot=home_hero").json()]

    assert everything == ["top", "a-tie", "b-tie", "strip"]
    assert hero_only == ["top", "a-tie", "b-tie"]
    assert secret_client.get("/api/v1/slots/home_hero").json()["rules"] == hero_only


def test_rules_of_an_unknown_slot_is_400(secret_client, hero):
    error = error_of(secret_client.get("/api/v1/rules?slot=nope"), 400)
    assert "slot" in error["details"]


def test_compiled_rules_follow_priority_then_key_and_leave_out_disabled_ones(secret_client, hero):
    # Given rules created in no particular order, one of them disabled
    create_rule(secret_client, key="b-tie", priority=10)
    create_rule(secret_client, key="low", priority=1)
    create_rule(secret_client, key="a-tie", priority=10)
    create_rule(secret_client, key="top", priority=50)
    create_rule(secret_client, key="off", priority=99, enabled=False)

    # When the configuration is compiled for /decide
    config = rules_config_load(version="test")

    # Then the slot tries them highest priority first, ties by key
    assert [r.key for r in config.slots["home_hero"].rules] == ["top", "a-tie", "b-tie", "low"]
    assert config.slots["home_hero"].rules[0].description == (
        "add_to_cart within 24h and no purchase within 24h"
    )


def test_rule_conditions_may_read_the_request_context(secret_client, hero):
    created = create_rule(
        secret_client, condition={"all": [MOBILE, {"context": "hour", "op": "gte", "value": 22}]}
    )
    assert created["condition"]["all"][0] == MOBILE


def test_a_segment_condition_may_not_read_the_request_context(secret_client):
    response = secret_client.post(
        "/api/v1/segments",
        {"slug": "mobile", "name": "Mobile", "condition": {"all": [MOBILE]}},
        format="json",
    )
    error = error_of(response, 400)
    assert error["details"]["condition"]["path"] == "all[0].context"
    assert "only for rules" in error["details"]["condition"]["reason"]


@pytest.mark.parametrize(
    ("condition", "path"),
    [
        (
            {"all": [MOBILE, {"any": [{"trait": "plan", "op": "bigger", "value": 1}]}]},
            "all[1].any[0].op",
        ),
        ({"all": [{"event": "add_to_cart", "within": "3 days"}]}, "all[0].within"),
        ({"not": {"context": "planet", "op": "eq", "value": "mars"}}, "not.context"),
        ({"all": [{"segment": "ghosts"}]}, "segment"),
        ("always", "(root)"),
    ],
)
def test_a_rule_with_a_bad_condition_is_400_naming_the_node(secret_client, hero, condition, path):
    response = secret_client.post("/api/v1/rules", rule_body(condition=condition), format="json")

    error = error_of(response, 400)
    assert error["details"]["condition"]["path"] == path
    assert error["details"]["condition"]["reason"]
    assert path in error["message"]
    assert not Rule.objects.exists()
    assert not AuditEvent.objects.filter(object_type="rules.rule").exists()


def test_a_rule_naming_an_unknown_segment_says_which(secret_client, hero):
    response = secret_client.post(
        "/api/v1/rules", rule_body(condition={"segment": "ghosts"}), format="json"
    )
    error = error_of(response, 400)
    assert "ghosts" in error["message"]
    assert "ghosts" in error["details"]["condition"]["reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variant": "newsletter"}, "variant"),  # a variant of another slot
        ({"variant": "nope"}, "variant"),
        ({"slot": "nope"}, "slot"),
        (
            {"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"},
            "ends_at",
        ),
        ({"starts_at": "2030-01-01T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, "ends_at"),
        ({"frequency_cap": {"count": 0, "per": "day"}}, "frequency_cap"),
        ({"frequency_cap": {"count": 2, "per": "month"}}, "frequency_cap"),
        ({"weight": -1}, "weight"),
        ({"priority": "high"}, "priority"),
        ({"key": "Not a slug"}, "key"),
        ({"scoring": [{"condition": {"segment": "ghosts"}, "points": 3}]}, "scoring[0].condition"),
        (
            {"scoring": [{"condition": {"attr": "nope", "op": "gt", "value": 1}, "points": 3}]},
            "scoring[0].condition",
        ),
    ],
)
def test_a_bad_rule_is_400_naming_the_field(secret_client, hero, change, field):
    create_slot(
        secret_client,
        {"key": "promo_strip", "variants": [{"key": "newsletter", "content": {"body": "Join"}}]},
    )

    response = secret_client.post("/api/v1/rules", rule_body(**change), format="json")

    error = error_of(response, 400)
    assert field in error["details"], error
    assert not Rule.objects.exists()


def test_a_patch_that_moves_a_rule_to_another_slot_needs_that_slots_variant(secret_client, hero):
    create_slot(
        secret_client,
        {"key": "promo_strip", "variants": [{"key": "newsletter", "content": {"body": "Join"}}]},
    )
    create_rule(secret_client)

    response = secret_client.patch(
        "/api/v1/rules/cart-reminder", {"slot": "promo_strip"}, format="json"
    )

    assert "variant" in error_of(response, 400)["details"]
    assert Rule.objects.get(key="cart-reminder").slot.key == "home_hero"


def test_a_rule_key_is_unique_and_cannot_be_changed(secret_client, hero):
    create_rule(secret_client)
    error = error_of(secret_client.post("/api/v1/rules", rule_body(), format="json"), 400)
    assert "key" in error["details"]
    response = secret_client.patch("/api/v1/rules/cart-reminder", {"key": "other"}, format="json")
    assert "key" in error_of(response, 400)["details"]


# --- every change is published ------------------------------------------------------------


def test_every_change_gives_the_configuration_a_new_version(
    secret_client, django_capture_on_commit_callbacks
):
    versions: list[Any] = [cache.get(services.VERSION_KEY)]

    def changed(method: str, path: str, body: Any = None, status: int = 200) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            response = getattr(secret_client, method)(path, body, format="json")
        assert response.status_code == status, response.content
        versions.append(cache.get(services.VERSION_KEY))

    changed("post", "/api/v1/slots", HERO, 201)
    changed("patch", "/api/v1/slots/home_hero", {"control_percent": 5})
    changed("post", "/api/v1/rules", rule_body(), 201)
    changed("put", "/api/v1/rules/cart-reminder", rule_body(priority=1))
    changed("patch", "/api/v1/rules/cart-reminder", {"enabled": False})
    changed("delete", "/api/v1/rules/cart-reminder", None, 204)
    changed("delete", "/api/v1/slots/home_hero", None, 204)

    # Then each save left a different version behind
    assert versions[0] is None
    assert None not in versions[1:]
    assert len(set(versions[1:])) == len(versions) - 1


def test_a_refused_change_does_not_publish_a_version(
    secret_client, hero, django_capture_on_commit_callbacks
):
    before = cache.get(services.VERSION_KEY)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = secret_client.patch(
            "/api/v1/slots/home_hero", {"default_variant": "nope"}, format="json"
        )
    error_of(response, 400)
    assert callbacks == []
    assert cache.get(services.VERSION_KEY) == before


# --- segments used by rules ---------------------------------------------------------------


# Committed transactions, as in production: the refusal happens inside Django's delete.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("where", ["condition", "scoring"])
def test_a_segment_a_rule_uses_cannot_be_deleted(secret_client, hero, where):
    # Given a rule that refers to segment "vips" (in its condition, or a scoring plan)
    segment_save(
        segment=Segment(
            slug="vips", name="VIPs", condition={"attr": "revenue", "op": "gt", "value": 500}
        ),
        actor="test",
    )
    if where == "condition":
        create_rule(secret_client, key="vip-hero", condition={"not": {"segment": "vips"}})
    else:
        create_rule(
            secret_client,
            key="vip-hero",
            condition={"all": []},
            scoring=[{"condition": {"segment": "vips"}, "points": 1}],
        )

    # When the segment is deleted / Then it is refused naming the rule, and it stays
    error = error_of(secret_client.delete("/api/v1/segments/vips"), 400)
    assert "vip-hero" in error["message"]
    assert Segment.objects.filter(slug="vips").exists()
    assert not AuditEvent.objects.filter(action="segment.deleted").exists()

    # When the rule is gone, the segment can go
    assert secret_client.delete("/api/v1/rules/vip-hero").status_code == 204
    assert secret_client.delete("/api/v1/segments/vips").status_code == 204
    assert not Segment.objects.filter(slug="vips").exists()


# --- who may call -------------------------------------------------------------------------

CALLS = [
    ("get", "/api/v1/slots", None),
    ("post", "/api/v1/slots", {**HERO, "key": "new"}),
    ("get", "/api/v1/slots/home_hero", None),
    ("put", "/api/v1/slots/home_hero", {**HERO, "description": "x"}),
    ("patch", "/api/v1/slots/home_hero", {"description": "x"}),
    ("delete", "/api/v1/slots/home_hero", None),
    ("get", "/api/v1/rules", None),
    ("post", "/api/v1/rules", rule_body(key="new")),
    ("get", "/api/v1/rules/cart-reminder", None),
    ("put", "/api/v1/rules/cart-reminder", rule_body(name="x")),
    ("patch", "/api/v1/rules/cart-reminder", {"name": "x"}),
    ("delete", "/api/v1/rules/cart-reminder", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CALLS, ids=[f"{m} {p}" for m, p, _ in CALLS])
def test_write_key_is_403_on_slots_and_rules(write_client, secret_client, hero, method, path, body):
    create_rule(secret_client)
    before = AuditEvent.objects.count()

    response = getattr(write_client, method)(path, body, format="json")

    assert error_of(response, 403)
    assert Slot.objects.get().description == HERO["description"]
    assert Rule.objects.get().name == "Cart reminder"
    assert AuditEvent.objects.count() == before


def test_no_key_is_401(anon_client):
    assert anon_client.get("/api/v1/slots").status_code == 401
    assert anon_client.get("/api/v1/rules").status_code == 401


# --- demo data ----------------------------------------------------------------------------


def test_the_demo_creates_its_slots_and_rules_once():
    # Given the demo segments (the demo rules refer to them)
    demo_segments_ensure()

    # When the demo rules are ensured twice
    slots, rules = demo_rules_ensure()
    again = demo_rules_ensure()

    # Then the four slots and nine rules exist once, and each is valid as stored
    assert (len(slots), len(rules)) == (len(DEMO_SLOTS), len(DEMO_RULES)) == (4, 9)
    assert again == ([], [])
    assert Slot.objects.count() == 4
    assert Rule.objects.count() == 9
    for rule in Rule.objects.select_related("slot", "variant"):
        services.rule_check(rule)
        assert rule.variant.slot_id == rule.slot_id
    config = rules_config_load(version="demo")
    assert sorted(config.slots) == ["content_feed", "home_hero", "product_note", "promo_strip"]
    assert [r.key for r in config.slots["home_hero"].rules] == [
        "cart-reminder",
        "flash-sale-deal-seekers",
        "late-night-banner",
        "loyal-thanks",
    ]
    assert all(s.default_variant for s in config.slots.values())


# --- listing cost -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/rules", "/api/v1/slots"])
def test_listing_costs_the_same_queries_for_few_or_many(secret_client, path):
    def queries_with(n: int) -> int:
        for i in range(n):
            key = f"slot-{n}-{i}"
            create_slot(
                secret_client,
                {"key": key, "variants": [{"key": "v", "content": {"title": "V"}}]},
            )
            create_rule(secret_client, key=f"rule-{n}-{i}", slot=key, variant="v")
        secret_client.get(path)  # the key lookup is cached after the first call
        with CaptureQueriesContext(connection) as ctx:
            response = secret_client.get(path)
        assert response.status_code == 200
        Rule.objects.all().delete()
        Slot.objects.all().delete()
        return len(ctx.captured_queries)

    assert queries_with(1) == queries_with(5)


@pytest.mark.parametrize(
    "url", ["/demo/cart/", "https://shop.example/cart", "http://x.example/a?b=1"]
)
def test_content_links_may_be_site_paths_or_http_urls(secret_client, url):
    slot = create_slot(
        secret_client,
        {
            **HERO,
            "variants": [
                {"key": "welcome", "content": {"title": "Hi", "cta": {"label": "Go", "url": url}}}
            ],
        },
    )
    assert slot["variants"][0]["content"]["cta"]["url"] == url


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "//evil.example/", "data:text/html,x", "/a b", "cart"]
)
def test_content_links_refuse_other_schemes_and_protocol_relative_urls(secret_client, url):
    body = {
        **HERO,
        "variants": [
            {"key": "welcome", "content": {"title": "Hi", "cta": {"label": "Go", "url": url}}}
        ],
    }
    error = error_of(secret_client.post("/api/v1/slots", body, format="json"), 400)
    assert "cta.url" in error["message"] or "cta.url" in str(error["details"])


# --- a PATCH replaces nested objects whole (found by tests/hardening/test_fuzz.py) --------


@pytest.mark.parametrize(
    ("path", "change", "field"),
    [
        ("/api/v1/rules/cart-reminder", {"scoring": [{"points": 3}]}, "scoring"),
        ("/api/v1/rules/cart-reminder", {"scoring": [{"condition": MOBILE}]}, "scoring"),
        ("/api/v1/rules/cart-reminder", {"frequency_cap": {"per": "day"}}, "frequency_cap"),
        ("/api/v1/rules/cart-reminder", {"frequency_cap": {"count": 2}}, "frequency_cap"),
        ("/api/v1/slots/home_hero", {"variants": [{"content": {"title": "A"}}]}, "variants"),
    ],
)
def test_a_patch_with_an_incomplete_nested_object_is_400(secret_client, hero, path, change, field):
    # Given a rule on a slot
    create_rule(secret_client)

    # When a PATCH sends a scoring item, cap or variant without one of its required fields
    response = secret_client.patch(path, change, format="json")

    # Then it is refused naming the field (not a 500), and nothing changed
    error = error_of(response, 400)
    assert field in error["details"], error
    rule = Rule.objects.get(key="cart-reminder")
    assert rule.scoring == []
    assert rule.frequency_cap_per == ""
    assert Slot.objects.get(key="home_hero").variants.count() == len(HERO["variants"])
