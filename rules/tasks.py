"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from rules import services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def decisions_attribute() -> None:
    services.decisions_attribute()
