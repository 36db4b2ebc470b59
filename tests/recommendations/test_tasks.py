"""Through a real Celery worker: training asked for from "the admin" runs on the worker,
records its progress, and its version is what the web process serves next."""

from __future__ import annotations

import os

import pytest
from django.db import transaction

from cdp.models import JobStatus
from recommendations.models import ModelVersion, VersionStatus
from recommendations.services import train_request
from tests.segments.test_tasks import _wait_for, celery_worker  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    # The worker writes its progress while the test polls: SQLite's shared-cache test
    # database fails such a write at once ("table is locked") instead of waiting.
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith("postgres"),
        reason="needs PostgreSQL: a worker writing while the test reads (CI runs it)",
    ),
]


def test_a_requested_training_runs_on_the_worker_and_is_served(
    shop,
    write_client,
    celery_worker,  # noqa: F811
):
    with transaction.atomic():
        version = train_request(actor="admin:ann")
    assert ModelVersion.objects.get(pk=version.pk).status == JobStatus.QUEUED

    def finished() -> bool:
        return ModelVersion.objects.get(pk=version.pk).status in (JobStatus.DONE, "failed")

    assert _wait_for(finished, timeout=90)
    done = ModelVersion.objects.get(pk=version.pk)
    assert done.status == JobStatus.DONE, done.error
    assert done.outcome == VersionStatus.ACTIVE
    assert done.step == "deciding whether to serve it"

    # the web process serves it on its next request
    body = write_client.get(
        "/api/v1/recommendations", {"strategy": "similar", "item": "sku-3", "limit": 3}
    ).json()
    assert body["model_version"] == done.version
    assert len(body["items"]) == 3
