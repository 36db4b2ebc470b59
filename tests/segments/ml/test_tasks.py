"""Through a real Celery worker: a queued clustering run, and events that move a new
visitor into its cluster segment without anyone asking."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from segments.ml import services
from segments.models import Clustering, ClusteringRun, Membership, ProfileScore
from tests.conftest import post_events
from tests.segments.ml.planted import planted_groups
from tests.segments.test_tasks import _wait_for, celery_worker  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_queued_run_and_real_time_assignment_on_a_worker(source, write_client, celery_worker):  # noqa: F811
    # given: planted behaviour and a clustering queued from "the admin"
    now = timezone.now()
    truth = planted_groups(source.source, per_group=30, now=now)
    c = Clustering.objects.create(key="behavior", name="Behavior", k_max=5)
    with transaction.atomic():
        run = services.clustering_run_request(clustering=c, actor="admin:ann")
    # then: the worker runs it and records its progress to the end
    assert _wait_for(lambda: ClusteringRun.objects.get(pk=run.pk).status == "done", timeout=60), (
        ClusteringRun.objects.get(pk=run.pk).error
    )
    numbers = dict(ProfileScore.objects.filter(model="behavior").values_list("profile_id", "score"))
    lapsed = next(int(numbers[p]) for p, g in truth.items() if g == "lapsed")
    # when: a brand-new visitor's first (and only) page view arrives today
    old = (now - timedelta(days=100)).isoformat()
    response = post_events(
        write_client, {"type": "page", "anonymous_id": "newbie", "timestamp": old}
    )
    assert response.status_code == 202
    # then: it is assigned on the worker to the cluster it resembles (one old visit)
    from profiles.models import Identity

    def assigned() -> bool:
        ident = Identity.objects.filter(value="newbie").first()
        return (
            ident is not None
            and Membership.objects.filter(
                profile_id=ident.profile_id, segment__slug=f"behavior-{lapsed}"
            ).exists()
        )

    assert _wait_for(assigned, timeout=30)
