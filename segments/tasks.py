"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

import uuid

from celery import shared_task

from segments import services
from segments.ml import services as ml_services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def segments_profiles_refresh(profile_ids: list[str]) -> None:
    services.realtime_refresh(profile_ids=[uuid.UUID(p) for p in profile_ids])


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def segments_recompute(slugs: list[str] | None = None, run_id: int | None = None) -> None:
    services.recompute_run_execute(run_id=run_id, slugs=slugs)


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def segments_sweep_windows() -> None:
    services.segments_sweep_windows()


# --- Clustering and predictive models (segments.ml) ----------------------------------------


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def ml_profiles_assign(profile_ids: list[str]) -> None:
    ml_services.realtime_assign(profile_ids=[uuid.UUID(p) for p in profile_ids])


# A failed fit is recorded on its row (status "failed", the error); retrying would only
# fail the same way on the same data, so these do not retry.
@shared_task(ignore_result=True)
def ml_clustering_run(run_id: int) -> None:
    ml_services.clustering_run_execute(run_id=run_id)


@shared_task(ignore_result=True)
def ml_predictor_train(version_id: int) -> None:
    ml_services.predictor_train_execute(version_id=version_id)


@shared_task(ignore_result=True)
def ml_retrain_due() -> None:
    ml_services.ml_retrain_due()
