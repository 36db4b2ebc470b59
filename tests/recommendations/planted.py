"""Interactions with planted structure: items come in bundles that the same shoppers
view, cart and buy together (in sessions, in a stable order), plus noise on a few
globally popular items. Item-item, bought-together and next-item models should find the
bundles; popularity cannot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from recommendations.algorithms import KIND_CART, KIND_PURCHASE, KIND_VIEW, Interactions

NOW = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Planted:
    inter: Interactions
    bundles: list[list[int]]  # item codes
    categories: list[str]  # per item code
    popular: list[int]


def planted(
    *,
    users: int = 800,
    bundles: int = 30,
    bundle_size: int = 5,
    popular: int = 10,
    noise: float = 0.25,
    days: int = 60,
    seed: int = 7,
    end: datetime = NOW,
) -> Planted:
    rng = np.random.default_rng(seed)
    n_items = bundles * bundle_size + popular
    groups = [list(range(b * bundle_size, (b + 1) * bundle_size)) for b in range(bundles)]
    pop = list(range(bundles * bundle_size, n_items))
    # a bundle spans categories (so a diverse list is possible); popular items too
    categories = [f"cat-{i % 6}" for i in range(n_items)]
    u_, i_, t_, k_ = [], [], [], []
    end_ts = end.timestamp()
    for u in range(users):
        mine = rng.choice(bundles, size=rng.integers(1, 3), replace=False)
        t = end_ts - days * 86400 * rng.uniform(0.3, 1.0)
        for _ in range(rng.integers(3, 8)):  # sessions
            g = groups[int(rng.choice(mine))]
            start = int(rng.integers(0, bundle_size))
            for step in range(int(rng.integers(2, bundle_size + 1))):
                item = g[(start + step) % bundle_size]
                if rng.random() < noise:
                    item = pop[int(rng.zipf(1.6)) % popular]
                kind = KIND_VIEW
                r = rng.random()
                if r < 0.25:
                    kind = KIND_CART
                elif r < 0.35:
                    kind = KIND_PURCHASE
                u_.append(u)
                i_.append(item)
                t_.append(t)
                k_.append(kind)
                t += rng.uniform(20, 300)
            t += rng.uniform(0.5, 5) * 86400
            if t > end_ts:
                break
    inter = Interactions(
        np.asarray(u_, np.int32),
        np.asarray(i_, np.int32),
        np.asarray(t_, np.float64),
        np.asarray(k_, np.int8),
        [f"u{u}" for u in range(users)],
        [f"sku-{i}" for i in range(n_items)],
    )
    return Planted(inter, groups, categories, pop)


def as_events(p: Planted, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The same interactions as native track events (product_viewed / product_added /
    purchase with products), for tests that go through ingestion."""
    names = {KIND_VIEW: "product_viewed", KIND_CART: "product_added", KIND_PURCHASE: "purchase"}
    out = []
    for n, (u, i, t, k) in enumerate(
        zip(p.inter.users, p.inter.items, p.inter.ts, p.inter.kinds, strict=True)
    ):
        item = p.inter.item_ids[int(i)]
        props: dict[str, Any] = {
            "product_id": item,
            "name": f"Product {item}",
            "category": p.categories[int(i)],
            "price": 10 + int(i) % 50,
        }
        if int(k) == KIND_PURCHASE:
            props = {"revenue": props["price"], "products": [props]}
        out.append(
            {
                "type": "track",
                "event": names[int(k)],
                "anonymous_id": f"planted-{p.inter.user_ids[int(u)]}",
                "message_id": f"planted-{n}",
                "timestamp": datetime.fromtimestamp(float(t), tz=UTC).isoformat(),
                "properties": props,
            }
        )
        if limit is not None and len(out) >= limit:
            break
    return out


def day(n: int) -> datetime:
    return NOW - timedelta(days=n)
