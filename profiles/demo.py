"""Demo data: a small shop's visitors and their behaviour over the last 30 days."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from profiles.ingestion import IngestContext, events_ingest
from profiles.models import Source
from profiles.services import SourceKeys, rfm_scores_compute, source_create

CATEGORIES = {
    "shoes": ["Trail runner", "City sneaker", "Leather boot"],
    "jackets": ["Rain shell", "Down parka", "Denim jacket"],
    "bags": ["Weekender", "Laptop backpack", "Tote"],
}
DEMO_SOURCE_SLUG = "demo-shop"


def demo_source_ensure() -> tuple[Source, SourceKeys | None]:
    """The demo source; keys are returned only when it is created now."""
    existing = Source.objects.filter(slug=DEMO_SOURCE_SLUG).first()
    if existing is not None:
        return existing, None
    made = source_create(
        name="Demo shop",
        slug=DEMO_SOURCE_SLUG,
        allowed_origins=["http://127.0.0.1:8000", "http://localhost:8000"],
    )
    return made.source, made


def _visitor_events(rng: random.Random, n: int, now: datetime) -> list[dict[str, Any]]:
    anon = f"demo-anon-{n}"
    user = f"demo-user-{n}" if rng.random() < 0.4 else None
    taste = rng.choice(list(CATEGORIES))
    events: list[dict[str, Any]] = []
    day = rng.randint(0, 29)
    for visit in range(rng.randint(1, 6)):
        start = now - timedelta(days=day, minutes=rng.randint(0, 600))
        t = start
        ids: dict[str, Any] = {"anonymous_id": anon}
        if user and visit > 0:
            ids["user_id"] = user
        events.append({"type": "page", "name": "Home", "timestamp": t.isoformat(), **ids})
        for _ in range(rng.randint(1, 5)):
            t += timedelta(seconds=rng.randint(10, 240))
            category = taste if rng.random() < 0.7 else rng.choice(list(CATEGORIES))
            item = rng.choice(CATEGORIES[category])
            price = rng.choice([39, 59, 89, 129, 199])
            props = {
                "product_id": item.lower().replace(" ", "-"),
                "name": item,
                "category": category,
                "product": item,
                "price": price,
            }
            events.append(
                {
                    "type": "track",
                    "event": "product_viewed",
                    "properties": props,
                    "timestamp": t.isoformat(),
                    **ids,
                }
            )
            events.append(
                {
                    "type": "track",
                    "event": "scroll_depth",
                    "properties": {"percent": rng.choice([25, 50, 75, 100])},
                    "timestamp": (t + timedelta(seconds=5)).isoformat(),
                    **ids,
                }
            )
            if rng.random() < 0.3:
                t += timedelta(seconds=30)
                events.append(
                    {
                        "type": "track",
                        "event": "add_to_cart",
                        "properties": props,
                        "timestamp": t.isoformat(),
                        **ids,
                    }
                )
                if rng.random() < 0.5:
                    t += timedelta(minutes=2)
                    events.append(
                        {
                            "type": "track",
                            "event": "purchase",
                            "properties": {
                                "revenue": price,
                                "currency": "EUR",
                                "category": category,
                                "products": [props],
                            },
                            "timestamp": t.isoformat(),
                            **ids,
                        }
                    )
        if user and visit == 0:
            events.append(
                {
                    "type": "identify",
                    "anonymous_id": anon,
                    "user_id": user,
                    "traits": {
                        "email": f"{user}@example.com",
                        "name": f"Demo Customer {n}",
                        "favourite_category": taste,
                    },
                    "timestamp": (t + timedelta(seconds=1)).isoformat(),
                }
            )
        day = max(0, day - rng.randint(1, 7))
    if rng.random() < 0.05:
        for e in events:
            e["context"] = {"user_agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}
    for i, e in enumerate(events):
        e["message_id"] = f"demo-{n}-{i}"
    return events


def demo_data_load(
    *, visitors: int = 300, now: datetime, progress: Callable[[int], object] | None = None
) -> int:
    """Load demo visitors through the real ingestion path; idempotent (fixed message ids)."""
    source, _ = demo_source_ensure()
    rng = random.Random(20261122)  # noqa: S311 (demo data, not security)
    ctx = IngestContext(
        source_id=source.pk,
        identity_secret=source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=now,
    )
    accepted = 0
    for n in range(visitors):
        events = _visitor_events(rng, n, now)
        for start in range(0, len(events), 500):
            accepted += events_ingest(ctx=ctx, payloads=events[start : start + 500]).accepted
        if progress:
            progress(1)
    rfm_scores_compute(now=now)
    return accepted
