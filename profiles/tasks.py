"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

import uuid

from celery import shared_task

from profiles import services


@shared_task(ignore_result=True)
def profile_stats_rebuild(profile_ids: list[str]) -> None:
    services.profile_stats_rebuild(profile_ids=[uuid.UUID(p) for p in profile_ids])


@shared_task(ignore_result=True)
def profiles_stats_rebuild_all() -> None:
    services.profiles_stats_rebuild_all()


@shared_task(ignore_result=True)
def rfm_scores_compute() -> None:
    services.rfm_scores_compute()
