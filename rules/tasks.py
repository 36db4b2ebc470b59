"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

from celery import shared_task

from rules import decisionlog, services


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def decisions_attribute() -> None:
    services.decisions_attribute()


@shared_task(ignore_result=True)
def decisions_drain() -> None:
    """Move logged decisions from Redis into the database (every few seconds)."""
    decisionlog.drain()
