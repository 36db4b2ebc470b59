"""The classic behavioral segments, for the demo (and as examples of the language)."""

from __future__ import annotations

from typing import Any

from segments.models import Segment
from segments.services import segment_save

DEMO_SEGMENTS: list[dict[str, Any]] = [
    {
        "slug": "engaged-buyers",
        "name": "Engaged Buyers",
        "priority": 30,
        "exclusive_group": "lifecycle",
        "description": "More than 3 purchases in 30 days.",
        "condition": {
            "event": "purchase",
            "within": "30d",
            "measure": {"fn": "count", "op": "gt", "value": 3},
        },
    },
    {
        "slug": "loyal-customers",
        "name": "Loyal Customers",
        "priority": 20,
        "exclusive_group": "lifecycle",
        "description": "Bought at least 3 times and recently (RFM recency 4-5).",
        "condition": {
            "all": [
                {"attr": "purchase_count", "op": "gte", "value": 3},
                {"attr": "rfm_recency", "op": "gte", "value": 4},
            ]
        },
    },
    {
        "slug": "casual-browsers",
        "name": "Casual Browsers",
        "priority": 10,
        "exclusive_group": "lifecycle",
        "description": "Seen in the last 30 days, fewer than 2 page views in the last week, "
        "fewer than 5 page views a session on average.",
        "condition": {
            "all": [
                {"attr": "days_since_last_seen", "op": "lte", "value": 30},
                {
                    "event": "$page",
                    "within": "7d",
                    "measure": {"fn": "count", "op": "lt", "value": 2},
                },
                {"not": {"attr": "page_view_count", "op": "gte", "value": 5}},
            ]
        },
    },
    {
        "slug": "cart-abandoners",
        "name": "Cart Abandoners",
        "priority": 0,
        "description": "Added to cart in the last 24 hours, no purchase since.",
        "condition": {
            "all": [
                {"event": "add_to_cart", "within": "24h"},
                {"not": {"event": "purchase", "within": "24h"}},
            ]
        },
    },
    {
        "slug": "high-engagement",
        "name": "High Engagement",
        "priority": 0,
        "description": "More than 10 product views in the last week.",
        "condition": {
            "event": "product_viewed",
            "within": "7d",
            "measure": {"fn": "count", "op": "gt", "value": 10},
        },
    },
    {
        "slug": "deal-seekers",
        "name": "Deal Seekers",
        "priority": 0,
        "description": "Looked at 3 or more low-priced products (≤ 59) in 30 days.",
        "condition": {
            "event": "product_viewed",
            "within": "30d",
            "where": [{"property": "price", "op": "lte", "value": 59}],
            "measure": {"fn": "count", "op": "gte", "value": 3},
        },
    },
]


def demo_segments_ensure(*, actor: str = "system") -> list[Segment]:
    """Create the demo segments that do not exist yet."""
    made = []
    for spec in DEMO_SEGMENTS:
        if not Segment.objects.filter(slug=spec["slug"]).exists():
            made.append(segment_save(segment=Segment(**spec), actor=actor))
    return made
