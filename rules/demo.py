"""Demo slots, variants and rules: classic behavioral-personalization cases."""

from __future__ import annotations

from typing import Any

from rules.models import Rule, Slot
from rules.services import rule_save, slot_save

DEMO_SLOTS: list[dict[str, Any]] = [
    {
        "key": "home_hero",
        "description": "The big banner on the home page.",
        "strategy": "first_match",
        "control_percent": 10.0,
        "default_variant": "welcome",
        "variants": [
            {
                "key": "welcome",
                "title": "New season, new favourites",
                "body": "Discover this week's arrivals.",
                "cta_label": "Shop now",
                "cta_url": "/demo/new/",
            },
            {
                "key": "cart-reminder",
                "title": "You left something behind",
                "body": "Your cart is saved — complete your order in one click.",
                "cta_label": "Back to my cart",
                "cta_url": "/demo/cart/",
            },
            {
                "key": "flash-sale",
                "title": "Flash sale: 30% off for 24 hours",
                "body": "Our best prices on the things you looked at.",
                "cta_label": "See the deals",
                "cta_url": "/demo/sale/",
                "data": {"discount": 30},
            },
            {
                "key": "late-night",
                "title": "Night owl? Free express shipping until 6 am",
                "cta_label": "Browse",
                "cta_url": "/demo/new/",
            },
            {
                "key": "loyal-thanks",
                "title": "Thank you for being with us",
                "body": "Members get early access to the summer collection.",
                "cta_label": "Early access",
                "cta_url": "/demo/new/",
            },
        ],
    },
    {
        "key": "product_note",
        "description": "A line of microcopy under the add-to-cart button.",
        "strategy": "first_match",
        "default_variant": "shipping",
        "variants": [
            {"key": "shipping", "body": "Free shipping and 30-day returns."},
            {
                "key": "hesitation",
                "body": "Still deciding? 9 out of 10 buyers kept it — and returns are free.",
                "html": "<p>Still deciding? <strong>9 out of 10</strong> buyers kept it.</p>",
            },
        ],
    },
    {
        "key": "content_feed",
        "description": "The editorial block on the home page, ranked by scoring plans.",
        "strategy": "score_sorted",
        "default_variant": "bestsellers",
        "variants": [
            {"key": "bestsellers", "title": "This week's bestsellers"},
            {
                "key": "guides",
                "title": "How to choose: our buying guides",
                "body": "Five-minute reads from our experts.",
            },
            {"key": "new-arrivals", "title": "Just in", "body": "Fresh arrivals picked for you."},
        ],
    },
    {
        "key": "promo_strip",
        "description": "A thin strip at the top of every page, rotated at random.",
        "strategy": "random",
        "default_variant": "free-shipping",
        "variants": [
            {"key": "free-shipping", "body": "Free shipping over 50 €"},
            {
                "key": "newsletter",
                "body": "Join the newsletter: 10% off your first order",
                "cta_label": "Join",
                "cta_url": "/demo/login/",
            },
        ],
    },
]

NIGHT = {
    "any": [
        {"context": "hour", "op": "gte", "value": 22},
        {"context": "hour", "op": "lt", "value": 5},
    ]
}

DEMO_RULES: list[dict[str, Any]] = [
    {
        "key": "cart-reminder",
        "slot": "home_hero",
        "name": "Cart reminder",
        "variant": "cart-reminder",
        "priority": 100,
        "condition": {
            "all": [
                {"event": "add_to_cart", "within": "24h"},
                {"not": {"event": "purchase", "within": "24h"}},
            ]
        },
        "frequency_cap_count": 3,
        "frequency_cap_per": "day",
    },
    {
        "key": "flash-sale-deal-seekers",
        "slot": "home_hero",
        "name": "Flash sale for deal seekers",
        "variant": "flash-sale",
        "priority": 80,
        "condition": {"segment": "deal-seekers"},
    },
    {
        "key": "late-night-banner",
        "slot": "home_hero",
        "name": "Late-night banner",
        "variant": "late-night",
        "priority": 50,
        "condition": NIGHT,
    },
    {
        "key": "loyal-thanks",
        "slot": "home_hero",
        "name": "Thank loyal customers",
        "variant": "loyal-thanks",
        "priority": 40,
        "condition": {"segment": "loyal-customers"},
    },
    {
        "key": "hesitation-microcopy",
        "slot": "product_note",
        "name": "Hesitation microcopy",
        "variant": "hesitation",
        "priority": 10,
        "condition": {
            "all": [
                {
                    "event": "product_viewed",
                    "within": "1h",
                    "measure": {"fn": "count", "op": "gte", "value": 3},
                },
                {"not": {"event": "add_to_cart", "within": "1h"}},
            ]
        },
        "frequency_cap_count": 2,
        "frequency_cap_per": "session",
    },
    {
        "key": "guides-casual-browsers",
        "slot": "content_feed",
        "name": "Educational content for casual browsers",
        "variant": "guides",
        "priority": 10,
        "condition": {"all": []},
        "scoring": [
            {"condition": {"segment": "casual-browsers"}, "points": 10},
            {
                "condition": {"context": "page", "op": "startswith", "value": "/demo/journal"},
                "points": 5,
            },
        ],
    },
    {
        "key": "new-arrivals-engaged",
        "slot": "content_feed",
        "name": "New arrivals for engaged visitors",
        "variant": "new-arrivals",
        "priority": 5,
        "condition": {"all": []},
        "scoring": [
            {"condition": {"segment": "high-engagement"}, "points": 8},
            {"condition": {"attr": "purchase_count", "op": "gte", "value": 1}, "points": 3},
        ],
    },
    {
        "key": "promo-free-shipping",
        "slot": "promo_strip",
        "name": "Free shipping strip",
        "variant": "free-shipping",
        "condition": {"all": []},
        "weight": 2.0,
    },
    {
        "key": "promo-newsletter",
        "slot": "promo_strip",
        "name": "Newsletter strip",
        "variant": "newsletter",
        "condition": {"not": {"consent": "marketing"}},
        "weight": 1.0,
    },
]


def demo_rules_ensure(*, actor: str = "system") -> tuple[list[Slot], list[Rule]]:
    """Create the demo slots and rules that do not exist yet (segments first: rules
    refer to the demo segments)."""
    slots, rules = [], []
    for spec in DEMO_SLOTS:
        if Slot.objects.filter(key=spec["key"]).exists():
            continue
        spec = dict(spec)
        variants, default = spec.pop("variants"), spec.pop("default_variant")
        slots.append(
            slot_save(slot=Slot(**spec), actor=actor, variants=variants, default_variant=default)
        )
    for spec in DEMO_RULES:
        if Rule.objects.filter(key=spec["key"]).exists():
            continue
        spec = dict(spec)
        slot = Slot.objects.get(key=spec.pop("slot"))
        variant = slot.variants.get(key=spec.pop("variant"))
        rules.append(rule_save(rule=Rule(slot=slot, variant=variant, **spec), actor=actor))
    return slots, rules
