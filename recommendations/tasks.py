"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from recommendations import services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def reco_catalog_sync() -> None:
    services.catalog_sync()


# A failed fit is recorded on its row (status "failed", the error); retrying would only
# fail the same way on the same data, so these do not retry.
@shared_task(ignore_result=True)
def reco_train() -> None:
    services.train_execute()


@shared_task(ignore_result=True)
def reco_train_version(version_id: int) -> None:
    services.train_execute(version_id=version_id)
