"""Demo data: the storefront's catalog in the recommendations catalog, and synthetic
shoppers (storefront.personas) loaded through the real ingestion service.

Idempotent: message ids are fixed per (seed, shopper, event), so a second run with the
same seed stores nothing new. Shoppers stream through in batches of 500 events, so
memory stays flat whether there are 2,000 of them or a million.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from profiles.demo import demo_source_ensure
from profiles.ingestion import IngestContext, events_ingest
from profiles.services import rfm_scores_compute
from recommendations.services import ItemFields, catalog_import
from storefront.catalog import PRODUCTS, product_properties
from storefront.personas import shoppers

DEFAULT_SEED = 20261122
BATCH = 500


@dataclass
class LoadReport:
    """What a load did: shoppers per persona, events sent and what ingestion made of them."""

    shoppers: int = 0
    events: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    seconds: float = 0.0
    personas: Counter[str] = field(default_factory=Counter)

    @property
    def rate(self) -> float:
        """Events sent per second (accepted or recognised as duplicates)."""
        return self.events / self.seconds if self.seconds else 0.0


def demo_catalog_ensure(*, now: datetime, actor: str = "seed_demo") -> tuple[int, int]:
    """Every product of the storefront's catalog in the recommendations catalog (title,
    category, price, url, image_url…), viewed or not. Returns (created, updated)."""
    updates = []
    for p in PRODUCTS:
        props = product_properties(p)
        attributes: dict[str, Any] = {
            "url": props["url"],
            "image_url": props["image_url"],
            "currency": "EUR",
            "description": p.description,
        }
        if p.compare_at is not None:
            attributes["compare_at"] = p.compare_at
        if p.tags:
            attributes["tags"] = list(p.tags)
        values = {
            "title": p.name,
            "category": p.category,
            "price": p.price,
            "in_stock": True,
            "attributes": attributes,
        }
        updates.append(ItemFields(p.id, now, values))
    return catalog_import(updates=updates, actor=actor)


def demo_shoppers_load(
    *,
    now: datetime,
    shoppers_count: int = 2000,
    seed: int = DEFAULT_SEED,
    days: int = 90,
    progress: Callable[[int], object] | None = None,
) -> LoadReport:
    """Generate the demo shoppers' last `days` days up to `now` and ingest them as the
    demo source (trusted, batches of 500), then refresh the RFM scores; `progress` is
    called with the number of shoppers done since its last call."""
    source, _ = demo_source_ensure()
    ctx = IngestContext(
        source_id=source.pk,
        identity_secret=source.identity_secret,
        require_identity_verification=False,
        trusted=True,
        received_at=now,
    )
    report = LoadReport()
    started = time.perf_counter()
    batch: list[dict[str, Any]] = []
    pending = 0  # shoppers generated since the last progress call

    def flush() -> None:
        nonlocal batch
        result = events_ingest(ctx=ctx, payloads=batch)
        report.events += len(batch)
        report.accepted += result.accepted
        report.duplicates += result.duplicates
        report.rejected += len(result.rejected)
        batch = []

    for _, persona, events in shoppers(seed=seed, count=shoppers_count, now=now, days=days):
        report.shoppers += 1
        report.personas[persona.key] += 1
        for event in events:
            batch.append(event)
            if len(batch) == BATCH:
                flush()
        pending += 1
        if progress is not None and pending >= 25:
            progress(pending)
            pending = 0
    if batch:
        flush()
    if progress is not None and pending:
        progress(pending)
    report.seconds = time.perf_counter() - started
    rfm_scores_compute(now=now)
    return report
