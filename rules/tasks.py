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


@shared_task(ignore_result=True)
def snapshots_warm_recent(minutes: int = 60, limit: int = 50_000) -> None:
    """Cache the snapshots of recently active visitors (after a batch recompute retired
    them all), so their next visits are warm."""
    from rules.decide import snapshots_warm
    from rules.selectors import profiles_recently_active

    snapshots_warm(profile_ids=profiles_recently_active(minutes=minutes, limit=limit))
