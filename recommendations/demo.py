"""Demo recommendations: the catalog from the demo events, a trained version, and two
slots that show it (the home page's picks, a product page's similar items)."""

from __future__ import annotations

from typing import Any

from recommendations.evaluation import at_k
from recommendations.models import ModelVersion, VersionStatus
from recommendations.services import catalog_sync, train_execute
from rules.models import Slot, Strategy
from rules.services import slot_save

DEMO_SLOTS: list[dict[str, Any]] = [
    {
        "key": "home_recommendations",
        "description": "Picked for the visitor from what they looked at (trending at first).",
        "recommendation": {"strategy": "personal", "limit": 4, "diversity": 0.3},
        "title": "Picked for you",
    },
    {
        "key": "product_similar",
        "description": "On a product page (context.item): items viewed together with it.",
        "recommendation": {"strategy": "similar", "limit": 4, "per_category": 2},
        "title": "Customers also viewed",
    },
]


def demo_recommendations_ensure(*, actor: str = "system") -> list[str]:
    """Sync the catalog, train a version if none is served, create the demo slots."""
    lines = []
    created, updated = catalog_sync()
    lines.append(f"catalog: {created} new item(s), {updated} updated")
    if not ModelVersion.objects.filter(outcome=VersionStatus.ACTIVE).exists():
        try:
            v = train_execute(requested_by=actor)
        except ValueError as exc:  # no product events yet
            lines.append(f"recommendations: not trained ({exc})")
        else:
            lines.append(
                f"recommendations v{v.version}: {v.data['interactions']} interactions, "
                f"held-out recall@10 {at_k(v.metrics, 'personal'):.3f} (popularity "
                f"{at_k(v.metrics, 'popularity'):.3f}); {v.decision}"
            )
    for spec in DEMO_SLOTS:
        if Slot.objects.filter(key=spec["key"]).exists():
            continue
        slot_save(
            slot=Slot(
                key=spec["key"],
                description=spec["description"],
                strategy=Strategy.RECOMMENDATIONS,
                recommendation=spec["recommendation"],
            ),
            actor=actor,
            variants=[{"key": "list", "title": spec["title"]}],
            default_variant="list",
        )
        lines.append(f"slot {spec['key']}: recommendations ({spec['recommendation']['strategy']})")
    return lines
