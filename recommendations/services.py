"""Writes: the catalog (from product events and imports) and model versions (training,
evaluation, promotion)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from cdp.audit import audit_record
from cdp.jobs import JobProgress, Progress
from cdp.models import JobStatus
from profiles.models import Event
from recommendations import algorithms as alg
from recommendations import artifact
from recommendations.evaluation import at_k, evaluate, time_split
from recommendations.interactions import event_kinds, interactions_read, product_facts
from recommendations.models import CatalogSync, Item, ModelVersion, VersionStatus
from recommendations.ranking import DEFAULT_BLEND, Models
from rules.services import config_changed

logger = logging.getLogger(__name__)

SYNC_CHUNK = 5000  # import rows per write
SYNC_EVENT_IDS = 250_000  # event ids per catalog sync query
ATTRIBUTES = ("brand", "variant", "image_url", "url", "currency", "description")


# --- Catalog ------------------------------------------------------------------------------


@dataclass
class ItemFields:
    item_id: str
    at: datetime
    values: dict[str, Any] = field(default_factory=dict)  # only the fields given


def _price(raw: Any) -> Decimal | None:
    if isinstance(raw, bool) or raw is None:
        return None
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        return None
    if not value.is_finite() or value < 0 or value >= Decimal("1e12"):
        return None
    return value.quantize(Decimal("0.01"))


def _stock(props: Mapping[str, Any]) -> bool | None:
    if isinstance(props.get("in_stock"), bool):
        return bool(props["in_stock"])
    for name in ("stock", "inventory", "quantity_available"):
        raw = props.get(name)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return raw > 0
    return None


def item_fields(props: Mapping[str, Any], at: datetime) -> ItemFields | None:
    """What a product event (or a product of an order) says about its item."""
    item = next(
        (
            props[p]
            for p in settings.CDP["RECO_ITEM_PROPERTIES"]
            if isinstance(props.get(p), str | int) and not isinstance(props.get(p), bool)
        ),
        None,
    )
    if item is None or str(item).strip() == "":
        return None
    out = ItemFields(str(item).strip()[:200], at)
    title = props.get("name", props.get("title"))
    if isinstance(title, str) and title.strip():
        out.values["title"] = title.strip()[:500]
    if isinstance(props.get("category"), str) and props["category"].strip():
        out.values["category"] = props["category"].strip()[:200]
    price = _price(props.get("price"))
    if price is not None:
        out.values["price"] = price
    stock = _stock(props)
    if stock is not None:
        out.values["in_stock"] = stock
    attrs = {
        a: props[a] for a in ATTRIBUTES if isinstance(props.get(a), str) and len(props[a]) <= 1000
    }
    if attrs:
        out.values["attributes"] = attrs
    return out


def items_upsert(updates: Iterable[ItemFields]) -> tuple[int, int]:
    """Apply item updates: per item, the newest facts of the batch win field by field;
    an update older than the item's last change is ignored, and one that changes
    nothing writes nothing (`seen_at` is the time of the last change). Returns
    (created, updated)."""
    latest: dict[str, ItemFields] = {}
    for u in sorted(updates, key=lambda u: u.at):
        prev = latest.get(u.item_id)
        if prev is None:
            latest[u.item_id] = ItemFields(u.item_id, u.at, dict(u.values))
        else:  # merge: later fields win, earlier ones stay where the later is silent
            attrs = {**prev.values.get("attributes", {}), **u.values.get("attributes", {})}
            prev.values.update(u.values)
            if attrs:
                prev.values["attributes"] = attrs
            prev.at = u.at
    if not latest:
        return 0, 0
    created = updated = 0
    with transaction.atomic():
        existing = {
            i.item_id: i for i in Item.objects.select_for_update().filter(item_id__in=list(latest))
        }
        new, changed = [], []
        for item_id, u in latest.items():
            item = existing.get(item_id)
            if item is None:
                new.append(Item(item_id=item_id, seen_at=u.at, **u.values))
                continue
            if item.seen_at is not None and item.seen_at > u.at:
                continue  # older than the item's last change
            changes = {
                name: ({**item.attributes, **value} if name == "attributes" else value)
                for name, value in u.values.items()
            }
            changes = {k: v for k, v in changes.items() if getattr(item, k) != v}
            if not changes:
                continue  # the same facts again: nothing to write (most product views)
            for name, value in changes.items():
                setattr(item, name, value)
            item.seen_at = u.at
            changed.append(item)
        now = timezone.now()
        for item in changed:
            item.updated_at = now
        # one INSERT … ON CONFLICT DO UPDATE for new and changed items alike
        Item.objects.bulk_create(
            [*new, *changed],
            update_conflicts=True,
            unique_fields=["item_id"],
            update_fields=[
                "title",
                "category",
                "price",
                "in_stock",
                "attributes",
                "seen_at",
                "updated_at",
            ],
            batch_size=2000,
        )
        created, updated = len(new), len(changed)
    return created, updated


def catalog_sync(*, progress: Progress | None = None) -> tuple[int, int]:
    """Bring the catalog up to date with the product events stored since the last sync
    (their properties: name, category, price, stock, brand, image_url, url…), a range
    of SYNC_EVENT_IDS event ids per transaction (each takes the sync's row lock, so two
    syncs never read the same range). Returns (items created, items updated)."""
    created = updated = 0
    CatalogSync.objects.get_or_create(pk=1)
    top = Event.objects.aggregate(m=Max("id"))["m"] or 0
    first: int | None = None
    while True:
        with transaction.atomic():
            state = CatalogSync.objects.select_for_update().get(pk=1)
            lo = state.last_event_id
            first = lo if first is None else first
            if lo >= top:
                break
            hi = min(top, lo + SYNC_EVENT_IDS)
            updates = [
                fields
                for ts, props in product_facts(lo=lo, hi=hi)
                if (fields := item_fields(props, ts)) is not None
            ]
            c, u = items_upsert(updates)
            created, updated = created + c, updated + u
            CatalogSync.objects.filter(pk=1).update(last_event_id=hi, synced_at=timezone.now())
        if progress is not None:
            progress("reading product events", hi - first, top - first)
    return created, updated


class ImportError_(ValueError):
    pass


def item_from_row(row: Mapping[str, Any], now: datetime) -> ItemFields:
    """One import row (a JSON object or a CSV line), or ImportError_ naming the field."""
    item_id = row.get("item_id", row.get("product_id"))
    if item_id is None or str(item_id).strip() == "":
        raise ImportError_("item_id: required")
    if len(str(item_id)) > 200:
        raise ImportError_("item_id: at most 200 characters")
    out = ItemFields(str(item_id).strip(), now)
    if row.get("title", row.get("name")) not in (None, ""):
        out.values["title"] = str(row.get("title", row.get("name")))[:500]
    if row.get("category") not in (None, ""):
        out.values["category"] = str(row["category"])[:200]
    if row.get("price") not in (None, ""):
        price = _price(row["price"])
        if price is None:
            raise ImportError_(f"price: not a non-negative number: {row['price']!r}")
        out.values["price"] = price
    if row.get("in_stock") not in (None, ""):
        raw = row["in_stock"]
        if isinstance(raw, bool):
            out.values["in_stock"] = raw
        elif str(raw).strip().lower() in ("1", "true", "yes", "y"):
            out.values["in_stock"] = True
        elif str(raw).strip().lower() in ("0", "false", "no", "n"):
            out.values["in_stock"] = False
        else:
            raise ImportError_(f"in_stock: not a yes/no value: {raw!r}")
    known = {"item_id", "product_id", "title", "name", "category", "price", "in_stock"}
    attrs = {k: v for k, v in row.items() if k not in known and v not in (None, "")}
    if isinstance(row.get("attributes"), dict):
        attrs.pop("attributes")
        attrs.update(row["attributes"])
    if attrs:
        out.values["attributes"] = attrs
    return out


def catalog_import(*, updates: list[ItemFields], actor: str) -> tuple[int, int]:
    created, updated = (0, 0)
    for start in range(0, len(updates), SYNC_CHUNK):
        c, u = items_upsert(updates[start : start + SYNC_CHUNK])
        created, updated = created + c, updated + u
    audit_record(
        actor=actor,
        action="recommendations.catalog_imported",
        object_type="recommendations.item",
        details={"created": created, "updated": updated},
    )
    return created, updated


# --- Training -------------------------------------------------------------------------------


def params_current() -> dict[str, Any]:
    c = settings.CDP
    return {
        "lookback_days": c["RECO_LOOKBACK_DAYS"],
        "half_life_days": c["RECO_HALF_LIFE_DAYS"],
        "trending_half_life_days": c["RECO_TRENDING_HALF_LIFE_DAYS"],
        "weights": list(c["RECO_WEIGHTS"]),
        "neighbours": c["RECO_NEIGHBOURS"],
        "shrink": 2.0,
        "fbt_min_support": 2,
        "next_smoothing": 1.0,
        "session_gap_seconds": c["SESSION_TIMEOUT_SECONDS"],
        "holdout_fraction": c["RECO_HOLDOUT_FRACTION"],
        "svd_rank": c["RECO_SVD_RANK"],
        "blend": dict(DEFAULT_BLEND),
    }


def models_fit(
    inter: alg.Interactions,
    *,
    now: float,
    params: Mapping[str, Any],
    version: int = 0,
    item_model: str = "item_item",
) -> tuple[Models, dict[str, int]]:
    """Every model on these interactions, and counts of what they were fitted on.
    `item_model` is the blend's item part (item_item, or svd where it did better)."""
    weights = tuple(float(w) for w in params["weights"])
    k = int(params["neighbours"])
    gap = float(params["session_gap_seconds"])
    half_life = float(params["half_life_days"])
    ii = alg.item_item(
        inter,
        now=now,
        k=k,
        half_life_days=half_life,
        weights=weights,  # type: ignore[arg-type]
        shrink=float(params["shrink"]),
    )
    svd = None
    if int(params.get("svd_rank") or 0) > 1:
        x = alg.user_item_matrix(
            inter,
            now=now,
            half_life_days=half_life,
            weights=weights,  # type: ignore[arg-type]
        )
        svd = alg.svd_neighbours(x, rank=int(params["svd_rank"]), k=k)
    bt, baskets = alg.bought_together(
        inter,
        k=k,
        gap_seconds=gap,
        min_support=int(params["fbt_min_support"]),
        shrink=float(params["shrink"]),
    )
    nx, sessions = alg.next_item(
        inter,
        k=k,
        gap_seconds=gap,
        now=now,
        half_life_days=float(params["half_life_days"]),
        smoothing=float(params["next_smoothing"]),
    )
    models = Models(
        version=version,
        item_ids=inter.item_ids,
        item_item=ii,
        bought_together=bt,
        next_item=nx,
        trending=alg.trending(
            inter,
            now=now,
            half_life_days=float(params["trending_half_life_days"]),
            weights=weights,  # type: ignore[arg-type]
        ),
        popularity=alg.popularity(inter),
        svd=svd,
        item_model=item_model,
        blend=dict(params["blend"]),
    )
    return models, {"baskets": baskets, "sessions": sessions}


def train_request(*, actor: str) -> ModelVersion:
    from recommendations.tasks import reco_train_version

    version = _new_version(actor)
    audit_record(
        actor=actor,
        action="recommendations.train_requested",
        object_type="recommendations.modelversion",
        object_id=version.pk,
        details={"version": version.version},
    )
    transaction.on_commit(lambda: reco_train_version.delay(version.pk))
    return version


def _new_version(actor: str) -> ModelVersion:
    with transaction.atomic():
        last = ModelVersion.objects.select_for_update().aggregate(m=Max("version"))["m"] or 0
        return ModelVersion.objects.create(version=last + 1, requested_by=actor)


def train_execute(
    *,
    version_id: int | None = None,
    requested_by: str = "system:schedule",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> ModelVersion:
    """Fit every model on the split's training part and evaluate it on the held-out
    part against popularity, then fit again on all interactions; the version is served
    only if it beats the active one (decision and figures kept on the row)."""
    version = (
        ModelVersion.objects.get(pk=version_id)
        if version_id is not None
        else _new_version(requested_by)
    )
    job = JobProgress(version, progress)
    job.start()
    try:
        _fit(version, job, now or timezone.now())
    except Exception as exc:
        job.fail(exc)
        raise
    return version


def _fit(version: ModelVersion, job: JobProgress, now: datetime) -> None:
    params = params_current()
    job("updating the catalog", 0, 0)
    started = time.monotonic()
    catalog_sync(progress=job)
    timings = {"catalog_s": round(time.monotonic() - started, 2)}
    since = now - timedelta(days=int(params["lookback_days"]))
    job("reading interactions", 0, 0)
    started = time.monotonic()
    inter = interactions_read(
        since=since, until=now, progress=lambda n: job("reading interactions", n, 0)
    )
    timings["read_s"] = round(time.monotonic() - started, 2)
    if len(inter) == 0:
        raise ValueError(
            "no interactions to learn from: no product events "
            f"({', '.join(sorted(event_kinds()))}) with an item id in the last "
            f"{params['lookback_days']} days"
        )
    job("fitting on the training split", 1, 4)
    t0 = time.monotonic()
    split = time_split(inter, holdout_fraction=float(params["holdout_fraction"]))
    held, _ = models_fit(split.train, now=split.at, params=params)
    timings["fit_split_s"] = round(time.monotonic() - t0, 2)
    job("evaluating on the held-out split", 2, 4)
    t0 = time.monotonic()
    metrics = evaluate(held, split)
    timings["evaluate_s"] = round(time.monotonic() - t0, 2)
    job("fitting on every interaction", 3, 4)
    t0 = time.monotonic()
    models, counts = models_fit(
        inter,
        now=now.timestamp(),
        params=params,
        version=version.version,
        item_model=str(metrics.get("item_model") or "item_item"),
    )
    blob = artifact.dump(models)
    timings["fit_all_s"] = round(time.monotonic() - t0, 2)
    kinds = np.bincount(inter.kinds, minlength=3).tolist()
    version.params = params
    version.data = {
        "interactions": len(inter),
        "views": kinds[0],
        "cart_adds": kinds[1],
        "purchases": kinds[2],
        "users": inter.n_users,
        "items": inter.n_items,
        **counts,
        "from": datetime.fromtimestamp(float(inter.ts.min()), tz=UTC).isoformat(),
        "to": datetime.fromtimestamp(float(inter.ts.max()), tz=UTC).isoformat(),
        "split_at": datetime.fromtimestamp(split.at, tz=UTC).isoformat(),
        "train_interactions": len(split.train),
        "test_interactions": len(split.test),
        "neighbours": {name: models.model(name).nnz for name in artifact.PARTS},
        "timings": timings,
    }
    version.metrics = metrics
    version.artifact = blob
    version.artifact_bytes = len(blob)
    job("deciding whether to serve it", 4, 4)
    _promote_or_reject(version, now)
    version.status = JobStatus.DONE
    version.finished_at = timezone.now()
    version.duration_ms = job.finish()
    version.save()


def _promote_or_reject(version: ModelVersion, now: datetime) -> None:
    """Serve the version if its personal recall@10 is at least the active version's
    (minus RECO_PROMOTION_TOLERANCE); keep why on the row."""
    m = version.metrics
    mine, pop = at_k(m, "personal"), at_k(m, "popularity")
    tol = settings.CDP["RECO_PROMOTION_TOLERANCE"]
    measured = bool(m.get("users"))
    with transaction.atomic():
        active = (
            ModelVersion.objects.select_for_update().filter(outcome=VersionStatus.ACTIVE).first()
        )
        if active is None:
            ok, why = True, "the first version: nothing to compare with"
        elif not measured:
            ok, why = False, "not evaluated (no visitor active on both sides of the split)"
        else:
            theirs = at_k(active.metrics, "personal")
            ok = mine >= theirs - tol
            why = f"recall@10 {mine:.3f} {'≥' if ok else '<'} v{active.version}'s {theirs:.3f}"
            if tol:
                why += f" − tolerance {tol:g}"
        if measured:
            why += f"; popularity baseline {pop:.3f}"
            if ok and mine < pop:
                why += " (the blend is below it: personal requests get trending)"
        version.decision = why[:500]
        if not ok:
            version.outcome = VersionStatus.REJECTED
            return
        if active is not None:
            ModelVersion.objects.filter(pk=active.pk).update(outcome=VersionStatus.RETIRED)
        version.outcome = VersionStatus.ACTIVE
        version.promoted_at = now
        version.save()
        audit_record(
            actor=version.requested_by,
            action="recommendations.version_promoted",
            object_type="recommendations.modelversion",
            object_id=version.pk,
            details={"version": version.version, "recall@10": mine, "popularity@10": pop},
        )
        config_changed()  # every web process reloads the served models


def version_activate(*, version: ModelVersion, actor: str) -> None:
    """Serve this (trained) version, whatever its figures: a rollback by hand."""
    if version.status != JobStatus.DONE or not version.artifact:
        raise ValueError("only a finished training run can be served")
    with transaction.atomic():
        ModelVersion.objects.select_for_update().filter(outcome=VersionStatus.ACTIVE).exclude(
            pk=version.pk
        ).update(outcome=VersionStatus.RETIRED)
        ModelVersion.objects.filter(pk=version.pk).update(
            outcome=VersionStatus.ACTIVE,
            promoted_at=timezone.now(),
            decision=f"served by hand by {actor}"[:500],
        )
        audit_record(
            actor=actor,
            action="recommendations.version_activated",
            object_type="recommendations.modelversion",
            object_id=version.pk,
            details={"version": version.version},
        )
        config_changed()
