"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

import uuid

from celery import shared_task

from segments import services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def segments_profiles_refresh(profile_ids: list[str]) -> None:
    services.realtime_refresh(profile_ids=[uuid.UUID(p) for p in profile_ids])


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def segments_recompute(slugs: list[str] | None = None, run_id: int | None = None) -> None:
    services.recompute_run_execute(run_id=run_id, slugs=slugs)


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def segments_sweep_windows() -> None:
    services.segments_sweep_windows()
