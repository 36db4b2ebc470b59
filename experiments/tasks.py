"""Celery tasks: thin wrappers over services."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.db import transaction
from django.utils import timezone

from experiments import selectors, services
from experiments.models import Experiment, Exposure, ResultSnapshot

# Conversions keep landing for a goal's window after the last exposure.
REFRESH_STOPPED_FOR = timedelta(days=14)


@shared_task(ignore_result=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=3)
def experiment_results_refresh(experiment_id: int, full: bool = False) -> None:
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is not None:
        services.results_refresh(experiment=experiment, full=full)


@shared_task(ignore_result=True)
def experiments_results_refresh_all(full: bool = False) -> None:
    """Every experiment whose results still move (on beat; `full` once a day, so late
    events for days already kept are counted too)."""
    for pk in selectors.experiments_to_refresh(
        now=timezone.now(), stopped_within=REFRESH_STOPPED_FOR
    ):
        experiment_results_refresh.delay(pk, full)


# Above this many exposures a first (or stale) computation goes to a worker instead of
# holding a web request for seconds.
SYNC_RESULTS_LIMIT = 200_000


def results_for_display(experiment: Experiment) -> tuple[ResultSnapshot | None, bool]:
    """The results to show now, and whether newer ones are being computed on a worker.
    With none yet, or none since the experiment was last changed (goals, weights…), a
    small experiment is computed on the spot and a large one is queued."""
    snapshot = selectors.results_latest(experiment=experiment)
    if snapshot is not None and snapshot.computed_at >= experiment.updated_at:
        return snapshot, False
    if Exposure.objects.filter(experiment=experiment).count() <= SYNC_RESULTS_LIMIT:
        return services.results_refresh(experiment=experiment), False
    pk = experiment.pk
    transaction.on_commit(lambda: experiment_results_refresh.delay(pk))
    return snapshot, True
