"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from experiments import selectors, services
from experiments.models import Experiment

# Conversions keep landing for a goal's window after the last exposure.
REFRESH_STOPPED_FOR = timedelta(days=14)


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def experiment_results_refresh(experiment_id: int) -> None:
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is not None:
        services.results_refresh(experiment=experiment)


@shared_task(ignore_result=True)
def experiments_results_refresh_all() -> None:
    """Every experiment whose results still move (on beat)."""
    for pk in selectors.experiments_to_refresh(
        now=timezone.now(), stopped_within=REFRESH_STOPPED_FOR
    ):
        experiment_results_refresh.delay(pk)
