"""Reads: the served models (cached in process per version: a version never changes),
the catalog as web processes see it (re-read when it changed, checked at most every
RECO_CATALOG_TTL_SECONDS), profiles' recent and bought items, versions for the admin."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from recommendations import artifact
from recommendations.evaluation import at_k
from recommendations.interactions import histories_of
from recommendations.models import Item, ModelVersion, VersionStatus
from recommendations.ranking import DEFAULT_BLEND, Models

_lock = threading.Lock()
_models: dict[int, Models] = {}


def personal_beats_popularity(metrics: dict[str, Any]) -> bool:
    """Is the personal blend at least as good as popularity on held-out data (True when
    nothing could be measured: no visitor was active on both sides of the split)? If
    not, personal requests are answered from trending."""
    if not metrics.get("users"):
        return True
    return at_k(metrics, "personal") >= at_k(metrics, "popularity")


def models_active() -> Models | None:
    """The served version's models, or None before any version is served."""
    row = (
        ModelVersion.objects.filter(outcome=VersionStatus.ACTIVE)
        .values_list("pk", "version", "params", "metrics")
        .first()
    )
    if row is None:
        return None
    pk, number, params, metrics = row
    cached = _models.get(pk)
    if cached is not None:
        return cached
    blob = ModelVersion.objects.filter(pk=pk).values_list("artifact", flat=True).first()
    if not blob:
        return None
    models = artifact.load(
        bytes(blob),
        version=number,
        blend=dict(params.get("blend") or DEFAULT_BLEND),
        personal_ok=personal_beats_popularity(metrics or {}),
    )
    with _lock:
        _models.clear()  # keep only the served one
        _models[pk] = models
    return models


def models_of(version: ModelVersion) -> Models | None:
    """A version's models (the admin's neighbour lists), not cached."""
    if not version.artifact:
        return None
    return artifact.load(
        bytes(version.artifact),
        version=version.version,
        blend=dict(version.params.get("blend") or DEFAULT_BLEND),
        personal_ok=personal_beats_popularity(version.metrics or {}),
    )


# --- The catalog as served ------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    title: str
    category: str
    price: float | None
    in_stock: bool
    image_url: str
    url: str


@dataclass(frozen=True)
class Catalog:
    items: dict[str, Entry]
    stamp: tuple[Any, int]

    def category(self, item_id: str) -> str:
        entry = self.items.get(item_id)
        return entry.category if entry else ""

    def available(self, item_id: str) -> bool:
        """Items the catalog does not know yet are offered; known ones only in stock."""
        entry = self.items.get(item_id)
        return entry is None or entry.in_stock


_catalog: tuple[float, Catalog] | None = None


def catalog_current() -> Catalog:
    global _catalog
    now = time.monotonic()
    held = _catalog
    if held is not None and now - held[0] < settings.CDP["RECO_CATALOG_TTL_SECONDS"]:
        return held[1]
    agg = Item.objects.aggregate(m=Max("updated_at"), n=Count("id"))
    stamp = (agg["m"], agg["n"])
    if held is not None and held[1].stamp == stamp:
        catalog = held[1]
    else:
        items = {}
        for item_id, title, category, price, in_stock, attrs in Item.objects.values_list(
            "item_id", "title", "category", "price", "in_stock", "attributes"
        ).iterator(chunk_size=5000):
            attrs = attrs if isinstance(attrs, dict) else {}
            items[item_id] = Entry(
                title,
                category,
                float(price) if price is not None else None,
                in_stock,
                str(attrs.get("image_url", "")),
                str(attrs.get("url", "")),
            )
        catalog = Catalog(items, stamp)
    with _lock:
        _catalog = (now, catalog)
    return catalog


def reset() -> None:
    """Forget the in-process models and catalog (tests)."""
    global _catalog
    with _lock:
        _models.clear()
        _catalog = None


# --- Profiles -------------------------------------------------------------------------------


def histories(profile_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """What serving needs of each profile (kept in its cached `/decide` snapshot): its
    recent items and what it bought."""
    now = timezone.now()
    return histories_of(
        profile_ids=profile_ids,
        since=now - timedelta(days=settings.CDP["RECO_HISTORY_DAYS"]),
        purchased_since=now - timedelta(days=settings.CDP["RECO_EXCLUDE_PURCHASED_DAYS"]),
    )


def versions_for_chart(limit: int = 30) -> list[ModelVersion]:
    """Finished versions, oldest first, without their artifacts."""
    from cdp.models import JobStatus

    rows = (
        ModelVersion.objects.filter(status=JobStatus.DONE)
        .defer("artifact")
        .order_by("-version")[:limit]
    )
    return list(reversed(rows))
