"""Writes: clustering runs and their segments, predictor versions and their scores,
real-time assignment of changed profiles. Every long step writes its progress on the
run's row (outside the writing transactions) so the admin can show it."""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
import uuid
from collections.abc import Generator, Iterable, Sequence
from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from cdp.audit import audit_record
from cdp.jobs import JobProgress, Progress, profiles_enqueue_coalesced
from cdp.models import JobStatus
from profiles.models import Event
from segments.conditions.language import score_keys
from segments.ml import clustering as cl
from segments.ml import predictive as pr
from segments.ml.features import (
    BASE_FEATURES,
    FeatureChunk,
    FeatureSpec,
    feature_chunks,
    features_matrix,
    live_profiles,
    top_categories,
)
from segments.ml.transform import Transform, transform_fit
from segments.models import (
    Clustering,
    ClusteringRun,
    Membership,
    Predictor,
    PredictorVersion,
    ProfileScore,
    RefreshPolicy,
    Segment,
)
from segments.signals import scores_changed

logger = logging.getLogger(__name__)


# --- Scores ------------------------------------------------------------------------------


def scores_write(
    *, model: str, profile_ids: Sequence[uuid.UUID], values: Sequence[float], at: datetime
) -> int:
    """Upsert one model's scores for these profiles (one statement per call)."""
    if not profile_ids:
        return 0
    table = ProfileScore._meta.db_table
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (profile_id, model, score, computed_at) "  # noqa: S608
                "SELECT p, %s, s, %s FROM unnest(%s::uuid[], %s::float8[]) AS t(p, s) "
                "ON CONFLICT (model, profile_id) DO UPDATE "
                "SET score = EXCLUDED.score, computed_at = EXCLUDED.computed_at",
                [model, at, list(profile_ids), [float(v) for v in values]],
            )
        return len(profile_ids)
    ProfileScore.objects.bulk_create(
        [
            ProfileScore(profile_id=pid, model=model, score=float(v), computed_at=at)
            for pid, v in zip(profile_ids, values, strict=True)
        ],
        batch_size=500,
        update_conflicts=True,
        unique_fields=["model", "profile"],
        update_fields=["score", "computed_at"],
    )
    return len(profile_ids)


def scores_prune(*, model: str, before: datetime) -> int:
    """Drop scores a run did not rewrite (profiles gone from the window, merged, erased)."""
    return ProfileScore.objects.filter(model=model, computed_at__lt=before).delete()[0]


def _score_users(key: str) -> list[str]:
    return [s.slug for s in Segment.objects.filter(active=True) if key in score_keys(s.condition)]


def _scores_published(key: str) -> None:
    """After a batch of scores: recompute the segments that read them (which retires the
    decision snapshots too), or retire the snapshots alone."""
    from segments.services import segments_recompute_all

    users = _score_users(key)
    if users:
        segments_recompute_all(only=users)
    scores_changed.send(sender=ProfileScore, model=key, profile_ids=None)


# --- Clustering ----------------------------------------------------------------------------


def _clustering_spec(clustering: Clustering, as_of: datetime) -> FeatureSpec:
    return FeatureSpec(
        as_of=as_of,
        lookback_days=clustering.lookback_days,
        categories=top_categories(as_of=as_of, lookback_days=clustering.lookback_days),
    )


def _selected(names: list[str], wanted: Iterable[str]) -> list[int]:
    wanted = list(wanted)
    if not wanted:
        return list(range(len(names)))
    picked = [
        i
        for i, n in enumerate(names)
        if n in wanted or ("affinity:*" in wanted and n.startswith("affinity:"))
    ]
    return picked or list(range(len(names)))


def clustering_check(clustering: Clustering) -> None:
    """Reject a definition that cannot run, naming the field."""
    from cdp.errors import ValidationFailed

    known = set(BASE_FEATURES) | {"affinity:*"}
    unknown = [
        f
        for f in clustering.features or []
        if not isinstance(f, str) or (f not in known and not f.startswith("affinity:"))
    ]
    if unknown:
        raise ValidationFailed(
            f"features: unknown feature(s) {', '.join(map(str, unknown))}",
            details={"features": [f"unknown: {', '.join(map(str, unknown))}"]},
        )
    if Predictor.objects.filter(key=clustering.key).exists():
        raise ValidationFailed(
            f"key: {clustering.key} is a predictor's score",
            details={"key": [f"{clustering.key} is already a predictor's score"]},
        )
    if clustering.k_min < 2 or clustering.k_max < clustering.k_min:
        raise ValidationFailed(
            "k_max: the range needs 2 <= k_min <= k_max",
            details={"k_max": ["needs 2 <= k_min <= k_max"]},
        )


def clustering_run_request(*, clustering: Clustering, actor: str) -> ClusteringRun:
    """Queue a run on a worker (answers at once; the run's row shows progress). Audited."""
    from segments.tasks import ml_clustering_run

    run = ClusteringRun.objects.create(clustering=clustering, requested_by=actor)
    audit_record(
        actor=actor,
        action="ml.clustering_run_requested",
        object_type="segments.clustering",
        object_id=clustering.pk,
        details={"key": clustering.key, "run": run.pk},
    )
    transaction.on_commit(lambda: ml_clustering_run.delay(run.pk))
    return run


def clustering_run_execute(
    *,
    run_id: int | None = None,
    clustering: Clustering | None = None,
    requested_by: str = "system:schedule",
    now: datetime | None = None,
    progress: Progress | None = None,
) -> ClusteringRun:
    """Fit the clustering, keep cluster numbers stable, write each profile's number as
    the score `<key>`, make every cluster a segment, and recompute those segments."""
    if run_id is not None:
        run = ClusteringRun.objects.select_related("clustering").get(pk=run_id)
        if run.status == JobStatus.DONE:  # delivered twice: it is done
            return run
    else:
        assert clustering is not None
        run = ClusteringRun.objects.create(clustering=clustering, requested_by=requested_by)
    c = run.clustering
    job = JobProgress(run, progress)
    job.start()
    try:
        _clustering_fit(run, c, job, now or timezone.now())
    except Exception as exc:
        job.fail(exc)
        raise
    return run


def _clustering_fit(run: ClusteringRun, c: Clustering, job: JobProgress, now: datetime) -> None:
    spec = _clustering_spec(c, now)
    data = features_matrix(spec, progress=lambda d, t: job("building features", d, t))
    cols = _selected(data.names, c.features)
    names = [data.names[i] for i in cols]
    X = data.X[:, cols]
    if len(X) < 20:
        raise cl.ClusteringFailed(
            f"{len(X)} profiles have events in the last {c.lookback_days} days: at least 20 "
            "are needed"
        )
    job("scaling and outliers", 0, 0)
    transform, keep, report = transform_fit(
        X, names, scaling=c.scaling, outliers=c.outliers, pca_components=c.pca_components
    )
    Z = transform.apply(X)
    config = cl.ClusteringConfig(
        algorithm=c.algorithm,
        k_min=c.k_min,
        k_max=c.k_max,
        sample_size=c.sample_size,
        eps=c.eps,
        min_samples=c.min_samples,
    )
    result = cl.cluster_fit(Z, config, fit_mask=keep, progress=lambda s: job(s))
    job("matching clusters to the previous run", 0, 0)
    previous = dict(
        ProfileScore.objects.filter(model=c.key, profile_id__in=data.ids).values_list(
            "profile_id", "score"
        )
        if len(data.ids) <= 200_000
        else ProfileScore.objects.filter(model=c.key).values_list("profile_id", "score")
    )
    prev = np.array([int(previous.get(pid, -1)) for pid in data.ids], dtype=np.int64)
    prefix = f"{c.key}-"
    taken = {
        int(s[len(prefix) :])
        for s in Segment.objects.filter(slug__startswith=prefix).values_list("slug", flat=True)
        if s[len(prefix) :].isdigit()
    }
    mapping = cl.match_clusters(prev, result.labels, result.k, taken=taken)
    numbers = np.array([mapping[int(i)] for i in result.labels], dtype=np.float64)
    # Labels compare centroids with the population in feature units (clipped values,
    # so one extreme spender does not make everyone else "low spend").
    clipped = np.clip(X, transform.low, transform.high)
    mean, std = clipped.mean(axis=0), clipped.std(axis=0)
    centroids_units = np.clip(transform.unscale(result.centroids), transform.low, transform.high)
    labels = cl.labels_unique(
        [cl.cluster_label(centroids_units[i], mean, std, names) for i in range(result.k)]
    )
    sizes = np.bincount(result.labels, minlength=result.k)
    old_run = ClusteringRun.objects.filter(clustering=c, is_current=True).first()
    old_labels = {
        int(x["number"]): x.get("label") for x in (old_run.clusters if old_run else []) or []
    }
    clusters: list[dict[str, Any]] = []
    for i in range(result.k):
        z = (centroids_units[i] - mean) / np.where(std > 1e-12, std, 1.0)
        clusters.append(
            {
                "number": mapping[i],
                "segment": f"{c.key}-{mapping[i]}",
                "label": labels[i],
                "size": int(sizes[i]),
                "centroid": {
                    n: round(float(v), 4) for n, v in zip(names, centroids_units[i], strict=True)
                },
                "z": {n: round(float(v), 3) for n, v in zip(names, z, strict=True)},
            }
        )
    clusters.sort(key=lambda x: x["number"])
    job("writing cluster numbers", 0, len(data.ids))
    at = timezone.now()
    with transaction.atomic():
        for start in range(0, len(data.ids), 20_000):
            scores_write(
                model=c.key,
                profile_ids=data.ids[start : start + 20_000],
                values=numbers[start : start + 20_000].tolist(),
                at=at,
            )
        scores_prune(model=c.key, before=at)
        slugs = _cluster_segments_sync(c, clusters, old_labels, actor=run.requested_by)
        ClusteringRun.objects.filter(clustering=c, is_current=True).update(is_current=False)
        run.as_of = now
        run.profiles = len(data.ids)
        run.k = result.k
        run.silhouette = result.silhouette
        run.scores_by_k = [
            {"k": s.k, "silhouette": s.silhouette, "inertia": s.inertia} for s in result.scores
        ]
        run.stability = result.stability
        run.outlier_report = {
            "method": report.method,
            "clipped_values": report.clipped_values,
            "removed_profiles": report.removed_profiles,
            "profiles": report.profiles,
        }
        run.noise_share = result.noise_share
        run.transform = transform.to_json()
        by_number = sorted(range(result.k), key=lambda i: mapping[i])
        run.centroids = [[float(v) for v in result.centroids[i]] for i in by_number]
        run.clusters = clusters
        run.projection = [[x, y, mapping[int(k)]] for x, y, k in cl.projection(Z, result.labels)]
        run.is_current = True
        run.status = JobStatus.DONE
        run.finished_at = timezone.now()
        run.duration_ms = job.finish()
        run.step = "done"
        run.save()
    models_cache_reset()
    job("recomputing cluster segments", 0, len(slugs))
    from segments.services import segments_recompute_all

    segments_recompute_all(only=slugs)
    scores_changed.send(sender=ProfileScore, model=c.key, profile_ids=None)
    ClusteringRun.objects.filter(pk=run.pk).update(duration_ms=job.finish(), step="done")


def _cluster_segments_sync(
    c: Clustering, clusters: list[dict[str, Any]], old_labels: dict[int, Any], *, actor: str
) -> list[str]:
    """One segment per cluster (created, or kept with its marketer-edited name); segments
    of clusters that no longer exist are deactivated and emptied."""
    live = []
    for x in clusters:
        slug = x["segment"]
        condition = {"score": c.key, "op": "eq", "value": x["number"]}
        segment = Segment.objects.filter(slug=slug).first()
        if segment is None:
            segment = Segment(slug=slug, name=x["label"][:200], condition=condition)
        elif segment.name == old_labels.get(x["number"]) or not segment.active:
            segment.name = x["label"][:200]  # never renamed by hand: follow the data
        segment.condition = condition
        segment.description = (
            f"Cluster {x['number']} of the clustering {c.name!r} ({c.key}): {x['label']}."
        )
        segment.active = True
        segment.refresh = RefreshPolicy.REALTIME
        segment.save()
        live.append(slug)
    gone = Segment.objects.filter(slug__startswith=f"{c.key}-", active=True).exclude(slug__in=live)
    for segment in gone:
        if segment.condition.get("score") != c.key:
            continue  # a hand-made segment that happens to share the prefix
        Membership.objects.filter(segment=segment).delete()
        Segment.objects.filter(pk=segment.pk).update(active=False, size=0)
        audit_record(
            actor=actor,
            action="ml.cluster_segment_retired",
            object_type="segments.segment",
            object_id=segment.pk,
            details={"slug": segment.slug},
        )
    return live


# --- Predictors ----------------------------------------------------------------------------


def predictor_check(predictor: Predictor) -> None:
    """Reject a definition that cannot train, naming the field."""
    from cdp.errors import ValidationFailed

    if predictor.target == Predictor.Target.EVENT and not predictor.target_event:
        raise ValidationFailed(
            "target_event: required for the event target",
            details={"target_event": ["required for the event target"]},
        )
    if Clustering.objects.filter(key=predictor.key).exists():
        raise ValidationFailed(
            f"key: {predictor.key} is a clustering's score",
            details={"key": [f"{predictor.key} is already a clustering's score"]},
        )


def _targets(predictor: Predictor, ids: Sequence[uuid.UUID], cutoff: datetime) -> np.ndarray:
    """1 for each profile whose outcome happened in [cutoff, cutoff + horizon)."""
    end = cutoff + timedelta(days=predictor.horizon_days)
    events = Event.objects.filter(is_bot=False, timestamp__gte=cutoff, timestamp__lt=end)
    if predictor.target == Predictor.Target.PURCHASE:
        events = events.filter(type="track", event__in=list(settings.CDP["PURCHASE_EVENTS"]))
    elif predictor.target == Predictor.Target.EVENT:
        events = events.filter(type="track", event=predictor.target_event)
    hit = set(events.values_list("profile_id", flat=True).distinct())
    y = np.array([1 if pid in hit else 0 for pid in ids], dtype=np.int64)
    if predictor.target == Predictor.Target.CHURN:
        y = 1 - y  # churned: nothing at all in the horizon
    return y


def _dump(model: Any) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    return buf.getvalue()


_MODELS: dict[int, Any] = {}


def _load(version: PredictorVersion) -> Any:
    """The fitted estimator of a version (cached in process: versions never change)."""
    import joblib

    if version.pk not in _MODELS:
        blob = bytes(version.model_blob or b"")
        _MODELS[version.pk] = joblib.load(io.BytesIO(blob))  # our own rows, written by _dump
    return _MODELS[version.pk]


def predictor_train_request(*, predictor: Predictor, actor: str) -> PredictorVersion:
    from segments.tasks import ml_predictor_train

    version = _new_version(predictor, actor)
    audit_record(
        actor=actor,
        action="ml.predictor_train_requested",
        object_type="segments.predictor",
        object_id=predictor.pk,
        details={"key": predictor.key, "version": version.version},
    )
    transaction.on_commit(lambda: ml_predictor_train.delay(version.pk))
    return version


def _new_version(predictor: Predictor, actor: str) -> PredictorVersion:
    with transaction.atomic():
        Predictor.objects.select_for_update().filter(pk=predictor.pk).first()
        last = predictor.versions.aggregate(m=Max("version"))["m"] or 0
        return PredictorVersion.objects.create(
            predictor=predictor,
            version=last + 1,
            algorithm=predictor.algorithm,
            requested_by=actor,
        )


def predictor_train_execute(
    *,
    version_id: int | None = None,
    predictor: Predictor | None = None,
    requested_by: str = "system:schedule",
    now: datetime | None = None,
    score: bool = True,
    progress: Progress | None = None,
) -> PredictorVersion:
    """Train a new version on history up to a cutoff (horizon days ago), evaluate it on
    held-out profiles, make it current only if it is not worse there than the current
    version, and (if it became current) score every profile."""
    if version_id is not None:
        version = PredictorVersion.objects.select_related("predictor").get(pk=version_id)
        if version.status == JobStatus.DONE:
            # A second delivery of the same task (the broker re-queues a task whose worker
            # it lost track of): training again could demote a newer version.
            return version
    else:
        assert predictor is not None
        version = _new_version(predictor, requested_by)
    job = JobProgress(version, progress)
    job.start()
    try:
        promoted = _predictor_fit(version, job, now or timezone.now())
    except Exception as exc:
        job.fail(exc)
        raise
    if promoted and score:
        predictor_score(predictor=version.predictor, progress=progress)
    return version


def _predictor_fit(version: PredictorVersion, job: JobProgress, now: datetime) -> bool:
    p = version.predictor
    cutoff = now - timedelta(days=p.horizon_days)
    spec = FeatureSpec(
        as_of=cutoff,
        lookback_days=p.lookback_days,
        categories=top_categories(as_of=cutoff, lookback_days=p.lookback_days),
    )
    label = f"building features as of {cutoff:%Y-%m-%d}"
    data = features_matrix(spec, progress=lambda d, t: job(label, d, t))
    job("reading outcomes", 0, 0)
    y = _targets(p, data.ids, cutoff)
    trained = pr.train(
        data.X,
        y,
        data.names,
        algorithm=version.algorithm or p.algorithm,
        threshold=p.threshold,
        progress=lambda s: job(s),
    )
    metrics = trained.metrics
    current = PredictorVersion.objects.filter(predictor=p, is_current=True).first()
    promote, decision = True, "first version"
    if current is not None:
        job("comparing with the current version", 0, 0)
        hold_ids = [data.ids[i] for i in trained.holdout]
        if list(current.feature_names) == data.names:
            X_old = data.X[trained.holdout]
        else:
            old_spec = FeatureSpec(
                as_of=cutoff, lookback_days=p.lookback_days, categories=tuple(current.categories)
            )
            old = features_matrix(old_spec, profile_ids=hold_ids)
            position = {pid: i for i, pid in enumerate(old.ids)}
            X_old = np.vstack(
                [
                    old.X[position[pid]] if pid in position else np.zeros(len(old.names))
                    for pid in hold_ids
                ]
            )
        old_auc = pr.auc_of(_load(current), X_old, y[trained.holdout])
        new_auc = metrics["holdout_auc"]
        tolerance = float(settings.CDP["ML_PROMOTION_TOLERANCE"])
        metrics["compared_with"] = {"version": current.version, "auc": old_auc, "new_auc": new_auc}
        if old_auc is not None and new_auc < old_auc - tolerance:
            promote = False
            decision = (
                f"kept v{current.version}: held-out AUC {new_auc:.3f} is below its "
                f"{old_auc:.3f} on the same profiles"
            )
        else:
            decision = (
                f"replaced v{current.version}: held-out AUC {new_auc:.3f} vs "
                f"{(old_auc or 0):.3f} on the same profiles"
            )
    with transaction.atomic():
        if promote:
            PredictorVersion.objects.filter(predictor=p, is_current=True).update(is_current=False)
        version.cutoff = cutoff
        version.feature_names = data.names
        version.categories = list(spec.categories)
        version.metrics = metrics
        version.model_blob = _dump(trained.model)
        version.is_current = promote
        version.decision = decision
        version.status = JobStatus.DONE
        version.finished_at = timezone.now()
        version.duration_ms = job.finish()
        version.step = "done"
        version.save()
    models_cache_reset()
    return promote


def _chunks_read_ahead(spec: FeatureSpec) -> Generator[FeatureChunk, None, None]:
    """feature_chunks(spec), with the next chunk's query running on a second connection
    (a thread) while the caller predicts and writes the current one. Only on PostgreSQL
    outside a transaction (another connection sees committed rows only); plain
    feature_chunks otherwise. At most two chunks wait in memory."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield from feature_chunks(spec)
        return
    out: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for part in feature_chunks(spec):
                if not put(("chunk", part)):
                    return
            put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=produce, name="ml-score-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = out.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def predictor_score(
    *, predictor: Predictor, now: datetime | None = None, progress: Progress | None = None
) -> int:
    """Score every profile with events in the lookback window with the current version,
    chunk by chunk (bounded memory); scores of profiles left out are dropped."""
    version = PredictorVersion.objects.filter(predictor=predictor, is_current=True).first()
    if version is None:
        return 0
    model = _load(version)
    spec = FeatureSpec(
        as_of=now or timezone.now(),
        lookback_days=predictor.lookback_days,
        categories=tuple(version.categories),
    )
    job = JobProgress(version, progress)
    total = live_profiles()
    at = timezone.now()
    scored = seen = 0
    from segments.ml.features import CHUNK_PROFILES

    job("scoring", 0, total)
    # One OpenMP thread for the model: a 20k-row predict takes ~0.1 s on one, and two
    # threads spinning against PostgreSQL and the read-ahead on two cores took 0.3-1.5 s
    # (docs/benchmarks.md, "Clustering and predictive models").
    with closing(_chunks_read_ahead(spec)) as parts, threadpool_limits(1, user_api="openmp"):
        for part in parts:
            scored += scores_write(
                model=predictor.key,
                profile_ids=part.ids,
                values=pr.scores_of(model, part.X).tolist(),
                at=at,
            )
            seen = min(total, seen + CHUNK_PROFILES)
            job("scoring", seen, total)
    scores_prune(model=predictor.key, before=at)
    PredictorVersion.objects.filter(pk=version.pk).update(
        scored_at=at, scored_profiles=scored, step="scored"
    )
    _scores_published(predictor.key)
    return scored


def threshold_counts(*, key: str, thresholds: Sequence[float]) -> list[tuple[float, int]]:
    """How many profiles each threshold selects (score ≥ threshold): the threshold picker."""
    qs = ProfileScore.objects.filter(model=key)
    return [(t, qs.filter(score__gte=t).count()) for t in thresholds]


# --- Schedules ------------------------------------------------------------------------------


def ml_retrain_due(*, now: datetime | None = None) -> dict[str, int]:
    """Re-run clusterings and retrain predictors whose last success is older than their
    `retrain_every_days`; score every predictor (recency moves every day)."""
    now = now or timezone.now()
    ran = trained = scored = 0
    for c in Clustering.objects.filter(active=True, retrain_every_days__gt=0):
        last = c.runs.filter(status=JobStatus.DONE).order_by("-finished_at").first()
        if last is None or (last.finished_at or now) <= now - timedelta(days=c.retrain_every_days):
            try:
                clustering_run_execute(clustering=c, now=now)
                ran += 1
            except Exception:
                logger.exception("scheduled clustering %s failed", c.key)
    for p in Predictor.objects.filter(active=True):
        last_v = p.versions.filter(status=JobStatus.DONE).order_by("-finished_at").first()
        due = p.retrain_every_days > 0 and (
            last_v is None
            or (last_v.finished_at or now) <= now - timedelta(days=p.retrain_every_days)
        )
        try:
            if due:
                predictor_train_execute(predictor=p, now=now, score=False)
                trained += 1
            if predictor_score(predictor=p, now=now):
                scored += 1
        except Exception:
            logger.exception("scheduled training of %s failed", p.key)
    return {"clusterings": ran, "trained": trained, "scored": scored}


# --- Real time -----------------------------------------------------------------------------

_CURRENT: tuple[float, list[Any]] | None = None


def models_cache_reset() -> None:
    """Forget the in-process caches of current models (after a run; tests)."""
    global _CURRENT
    _CURRENT = None
    _MODELS.clear()


def _current_models() -> list[Any]:
    """(kind, key, payload) of every current clustering run and predictor version,
    cached in process for 5 s (ingestion pays nothing when there are none)."""
    global _CURRENT
    now = time.monotonic()
    if _CURRENT is not None and now - _CURRENT[0] <= 5:
        return _CURRENT[1]
    found: list[Any] = [
        ("cluster", run.clustering.key, run)
        for run in ClusteringRun.objects.filter(
            is_current=True, clustering__active=True
        ).select_related("clustering")
    ] + [
        ("predictor", v.predictor.key, v)
        for v in PredictorVersion.objects.filter(
            is_current=True, predictor__active=True
        ).select_related("predictor")
    ]
    _CURRENT = (now, found)
    return found


def realtime_enqueue(*, profile_ids: Iterable[uuid.UUID]) -> None:
    """Coalesced like the segments' real-time refresh: one queued task per profile burst."""
    from segments.tasks import ml_profiles_assign

    if not _current_models():
        return
    # Without Redis the daily scoring catches up.
    profiles_enqueue_coalesced(
        task=ml_profiles_assign,
        prefix="cdp:mlrt",
        profile_ids=profile_ids,
        countdown=0.2,
        what="real-time scoring",
    )


def realtime_assign(*, profile_ids: list[uuid.UUID], now: datetime | None = None) -> int:
    """Assign these profiles to their nearest centroid in every current clustering and
    score them with every current predictor, from their features as of now; then refresh
    their real-time segments. Returns how many scores changed."""
    cache.delete_many([f"cdp:mlrt:{pid}" for pid in profile_ids])
    models = _current_models()
    if not models or not profile_ids:
        return 0
    now = now or timezone.now()
    existing = {
        (pid, m): s
        for pid, m, s in ProfileScore.objects.filter(
            profile_id__in=profile_ids, model__in=[k for _, k, _ in models]
        ).values_list("profile_id", "model", "score")
    }
    changed: set[uuid.UUID] = set()
    writes = 0
    by_spec: dict[tuple[int, tuple[str, ...]], FeatureChunk] = {}
    for kind, key, obj in models:
        if kind == "cluster":
            lookback = obj.clustering.lookback_days
            transform = Transform.from_json(obj.transform)
            spec = FeatureSpec(
                as_of=now,
                lookback_days=lookback,
                categories=tuple(
                    n.split(":", 1)[1] for n in transform.names if n.startswith("affinity:")
                ),
            )
        else:
            spec = FeatureSpec(
                as_of=now,
                lookback_days=obj.predictor.lookback_days,
                categories=tuple(obj.categories),
            )
        cache_key = (spec.lookback_days, spec.categories)
        if cache_key not in by_spec:
            by_spec[cache_key] = features_matrix(spec, profile_ids=profile_ids)
        data = by_spec[cache_key]
        if not data.ids:
            continue
        if kind == "cluster":
            cols = [data.names.index(n) for n in transform.names]
            centroids = np.asarray(obj.centroids, dtype=np.float64)
            # centroids are stored in the order of `clusters` (by number)
            numbers = [x["number"] for x in obj.clusters]
            idx = cl.nearest(transform.apply(data.X[:, cols]), centroids)
            values = [float(numbers[i]) for i in idx]
        else:
            values = pr.scores_of(_load(obj), data.X).tolist()
        fresh_ids, fresh_values = [], []
        for pid, v in zip(data.ids, values, strict=True):
            old = existing.get((pid, key))
            if old is None or abs(old - v) > 1e-9:
                fresh_ids.append(pid)
                fresh_values.append(v)
        if fresh_ids:
            writes += scores_write(model=key, profile_ids=fresh_ids, values=fresh_values, at=now)
            changed |= set(fresh_ids)
    if changed:
        from segments.services import realtime_refresh

        ids = sorted(changed)
        scores_changed.send(sender=ProfileScore, model=None, profile_ids=ids)
        realtime_refresh(profile_ids=ids, now=now)
    return writes
