"""Generated behaviour with structure planted in it (what the models must find).

Rows are written straight into the real tables (profiles and events): the features read
raw events only, and going through the ingestion API for thousands of events would only
make the tests slow."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

from profiles.models import Event, Profile, Source

GROUPS = ("buyers", "browsers", "lapsed")


def _event(
    source: Source, profile: Profile, ts: datetime, type_: str, name: str = "", **props: Any
) -> Event:
    return Event(
        source=source,
        message_id=uuid.uuid4().hex,
        profile=profile,
        type=type_,
        event=name,
        timestamp=ts,
        received_at=ts,
        properties=props,
    )


def _visit(
    rng: random.Random,
    source: Source,
    profile: Profile,
    start: datetime,
    *,
    pages: int,
    gap_seconds: float,
    category: str,
    scroll: int | None = None,
    cart: bool = False,
    purchase: float | None = None,
) -> list[Event]:
    out: list[Event] = []
    t = start
    for _ in range(pages):
        out.append(_event(source, profile, t, "page"))
        t += timedelta(seconds=gap_seconds * rng.uniform(0.8, 1.2))
        out.append(_event(source, profile, t, "track", "product_viewed", category=category))
        if scroll is not None:
            out.append(_event(source, profile, t, "track", "scroll_depth", percent=scroll))
        t += timedelta(seconds=gap_seconds * rng.uniform(0.8, 1.2))
    if cart:
        out.append(_event(source, profile, t, "track", "add_to_cart", category=category))
        t += timedelta(seconds=20)
    if purchase is not None:
        out.append(_event(source, profile, t, "track", "purchase", revenue=purchase))
    return out


def planted_groups(
    source: Source, *, per_group: int, now: datetime, seed: int = 1
) -> dict[uuid.UUID, str]:
    """Three behaviours: frequent recent buyers who spend; deep browsers who scroll and
    never buy; lapsed one-visit profiles from two to five months ago."""
    rng = random.Random(seed)
    truth: dict[uuid.UUID, str] = {}
    events: list[Event] = []
    for group in GROUPS:
        for _ in range(per_group):
            p = Profile.objects.create()
            truth[p.pk] = group
            if group == "buyers":
                for _v in range(rng.randint(8, 12)):
                    start = now - timedelta(days=rng.uniform(0.5, 20), hours=rng.uniform(0, 5))
                    events += _visit(
                        rng,
                        source,
                        p,
                        start,
                        pages=rng.randint(2, 3),
                        gap_seconds=30,
                        category="shoes",
                        cart=True,
                        purchase=rng.uniform(150, 300),
                    )
            elif group == "browsers":
                for _v in range(rng.randint(3, 5)):
                    start = now - timedelta(days=rng.uniform(1, 40), hours=rng.uniform(0, 5))
                    events += _visit(
                        rng,
                        source,
                        p,
                        start,
                        pages=rng.randint(10, 14),
                        gap_seconds=90,
                        category="bags",
                        scroll=rng.choice([75, 100]),
                    )
            else:
                start = now - timedelta(days=rng.uniform(60, 150))
                events += _visit(rng, source, p, start, pages=1, gap_seconds=10, category="jackets")
    Event.objects.bulk_create(events, batch_size=2000)
    return truth


def planted_churn(
    source: Source,
    *,
    profiles: int,
    now: datetime,
    horizon_days: int,
    seed: int = 2,
) -> dict[uuid.UUID, int]:
    """Histories before the cutoff (now - horizon) and activity after it. The planted
    driver: profiles who added to cart before the cutoff mostly come back, the others
    mostly do not; visits, pages and days look alike in both. Returns who churned
    (1: no event in the horizon)."""
    rng = random.Random(seed)
    cutoff = now - timedelta(days=horizon_days)
    churned: dict[uuid.UUID, int] = {}
    events: list[Event] = []
    for _ in range(profiles):
        p = Profile.objects.create()
        carts = rng.random() < 0.5
        for d in rng.sample(range(1, 60), rng.randint(2, 6)):
            start = cutoff - timedelta(days=d, hours=rng.uniform(0, 10))
            events += _visit(
                rng,
                source,
                p,
                start,
                pages=rng.randint(1, 4),
                gap_seconds=40,
                category=rng.choice(["shoes", "bags"]),
                cart=carts and rng.random() < 0.7,
            )
        comes_back = rng.random() < (0.9 if carts else 0.1)
        churned[p.pk] = 0 if comes_back else 1
        if comes_back:
            start = cutoff + timedelta(days=rng.uniform(0.5, horizon_days - 1))
            events += _visit(rng, source, p, start, pages=2, gap_seconds=30, category="shoes")
    Event.objects.bulk_create(events, batch_size=2000)
    return churned
