"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

import uuid

from celery import shared_task

from consent import services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def privacy_request_process(request_id: str) -> None:
    services.privacy_request_process(request_id=uuid.UUID(request_id))


@shared_task(ignore_result=True)
def privacy_exports_expire() -> None:
    services.privacy_exports_expire()
