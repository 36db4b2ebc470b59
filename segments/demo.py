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
        "description": "Looked at 4 or more products on sale in 30 days.",
        "condition": {
            "event": "product_viewed",
            "within": "30d",
            "where": [{"property": "on_sale", "op": "eq", "value": True}],
            "measure": {"fn": "count", "op": "gte", "value": 4},
        },
    },
    {
        "slug": "content-explorers",
        "name": "Content Explorers",
        "priority": 0,
        "description": "Stayed 3 minutes or more on at least 2 pages in 30 days (they read).",
        "condition": {
            "event": "page_dwell",
            "within": "30d",
            "where": [{"property": "seconds", "op": "gte", "value": 180}],
            "measure": {"fn": "count", "op": "gte", "value": 2},
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


def demo_models_ensure() -> list[str]:
    """A behavioral clustering and a purchase-propensity model, fitted on the demo data
    (what they found, in one line each; a model the data cannot support says why)."""
    from django.utils import timezone

    from segments.ml.clustering import ClusteringFailed
    from segments.ml.predictive import TrainingFailed
    from segments.ml.services import clustering_run_execute, predictor_train_execute
    from segments.models import Clustering, Predictor

    lines: list[str] = []
    clustering, _ = Clustering.objects.get_or_create(
        key="behavior",
        defaults={"name": "Shopping behaviour", "k_min": 2, "k_max": 6, "lookback_days": 60},
    )
    if not clustering.runs.filter(status="done").exists():
        try:
            run = clustering_run_execute(clustering=clustering, requested_by="system:demo")
            lines.append(
                f"clustering {clustering.key}: {run.k} clusters ("
                + "; ".join(x["label"] for x in run.clusters)
                + ")"
            )
        except ClusteringFailed as exc:
            lines.append(f"clustering {clustering.key}: {exc}")
    predictor, _ = Predictor.objects.get_or_create(
        key="purchase-propensity",
        defaults={
            "name": "Buys in the next 7 days",
            "target": Predictor.Target.PURCHASE,
            "horizon_days": 7,
            "lookback_days": 60,
            "algorithm": Predictor.Algorithm.LOGISTIC_REGRESSION,
            "threshold": 0.5,
        },
    )
    if not predictor.versions.filter(status="done").exists():
        now = timezone.now()
        try:
            version = predictor_train_execute(
                predictor=predictor, requested_by="system:demo", now=now
            )
            lines.append(
                f"model {predictor.key}: held-out AUC {version.metrics['holdout_auc']:.2f}"
            )
        except TrainingFailed as exc:
            lines.append(f"model {predictor.key}: {exc}")
    return lines
