"""The demo source (the demo storefront's events come in as it). The demo shoppers and
their events are storefront.demo's; seed_demo loads them."""

from __future__ import annotations

from profiles.models import Source
from profiles.services import SourceKeys, source_create

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
