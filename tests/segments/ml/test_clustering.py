"""Clustering on planted behaviour: the groups are found, labelled, kept stable, and
become segments that new profiles join in real time."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from sklearn.metrics import adjusted_rand_score

from profiles.models import Event, Profile
from segments.ml import services
from segments.ml.clustering import ClusteringFailed, match_clusters
from segments.models import Clustering, ClusteringRun, Membership, ProfileScore, Segment
from tests.segments.ml.planted import _visit, planted_groups

pytestmark = pytest.mark.django_db


def _numbers(key: str) -> dict:
    return dict(ProfileScore.objects.filter(model=key).values_list("profile_id", "score"))


def _ari(truth: dict, got: dict) -> float:
    ids = list(truth)
    return adjusted_rand_score([truth[i] for i in ids], [got.get(i, -1) for i in ids])


@pytest.fixture
def groups(source):
    now = timezone.now()
    return now, planted_groups(source.source, per_group=50, now=now)


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("kmeans", {}),
        ("minibatch_kmeans", {}),
        ("agglomerative", {}),
        ("hdbscan", {"min_samples": 15}),
        (
            "dbscan",
            {"eps": 1.5, "min_samples": 5, "outliers": "zscore_clip", "scaling": "standard"},
        ),
    ],
)
def test_each_algorithm_recovers_the_planted_groups(groups, algorithm, extra):
    # given
    now, truth = groups
    c = Clustering.objects.create(
        key="behavior", name="Behavior", algorithm=algorithm, k_max=6, **extra
    )
    # when
    run = services.clustering_run_execute(clustering=c, now=now)
    # then
    assert run.k == 3
    assert _ari(truth, _numbers("behavior")) >= 0.8


def test_k_is_chosen_by_silhouette_and_every_k_is_reported(groups):
    now, _ = groups
    c = Clustering.objects.create(key="behavior", name="Behavior", k_min=2, k_max=6)
    run = services.clustering_run_execute(clustering=c, now=now)
    assert [s["k"] for s in run.scores_by_k] == [2, 3, 4, 5, 6]
    best = max(run.scores_by_k, key=lambda s: s["silhouette"])
    assert best["k"] == run.k == 3
    inertias = [s["inertia"] for s in run.scores_by_k]
    assert inertias == sorted(inertias, reverse=True)  # the elbow curve falls
    assert run.stability["runs"] == 5
    assert run.stability["ari_mean"] >= 0.9
    assert len(run.projection) == 150
    assert {p[2] for p in run.projection} == {1, 2, 3}


def test_clusters_become_segments_with_labels_from_their_centroids(groups):
    # given
    now, truth = groups
    c = Clustering.objects.create(key="behavior", name="Behavior", k_max=5)
    # when
    run = services.clustering_run_execute(clustering=c, now=now)
    # then: one segment per cluster, members = the profiles holding that number
    numbers = _numbers("behavior")
    by_group: dict[str, set[int]] = {}
    for pid, group in truth.items():
        by_group.setdefault(group, set()).add(int(numbers[pid]))
    assert all(len(v) == 1 for v in by_group.values())
    labels = {x["number"]: x["label"] for x in run.clusters}
    buyers = labels[next(iter(by_group["buyers"]))]
    lapsed = labels[next(iter(by_group["lapsed"]))]
    assert "frequent buyers" in buyers or "high spend" in buyers
    assert "lapsed" in lapsed
    for x in run.clusters:
        segment = Segment.objects.get(slug=x["segment"])
        assert segment.name == x["label"]
        assert segment.size == x["size"] == 50
        members = set(
            Membership.objects.filter(segment=segment).values_list("profile_id", flat=True)
        )
        assert members == {pid for pid, n in numbers.items() if n == x["number"]}


def test_a_rerun_keeps_cluster_numbers_and_the_marketers_names(groups, source):
    # given: a first run, and a marketer who renamed one cluster segment
    now, _truth = groups
    c = Clustering.objects.create(key="behavior", name="Behavior", k_max=5)
    first = services.clustering_run_execute(clustering=c, now=now)
    before = _numbers("behavior")
    renamed = first.clusters[0]["segment"]
    Segment.objects.filter(slug=renamed).update(name="VIPs")
    # when: more profiles of each kind arrive and the clustering runs again
    planted_groups(source.source, per_group=10, now=now, seed=9)
    second = services.clustering_run_execute(clustering=c, now=now + timedelta(minutes=1))
    # then: everyone keeps their number; the renamed segment keeps its name
    after = _numbers("behavior")
    assert all(after[pid] == n for pid, n in before.items())
    assert Segment.objects.get(slug=renamed).name == "VIPs"
    assert ClusteringRun.objects.get(is_current=True) == second
    assert Segment.objects.filter(slug__startswith="behavior-").count() == 3


def test_match_clusters_gives_vanished_clusters_numbers_away_to_nobody():
    previous = np.array([1, 1, 2, 2, 3, 3, -1])
    labels = np.array([0, 0, 1, 1, 1, 1, 2])  # 2 and 3 merged; a new cluster 2
    mapping = match_clusters(previous, labels, 3, taken=set())
    assert mapping[0] == 1
    assert mapping[1] in (2, 3)
    assert mapping[2] not in (1, 2, 3)


def test_a_new_profile_joins_its_nearest_cluster_in_real_time(groups, source, ingest):
    # given: a clustering, and a new visitor who behaves like the buyers
    now, truth = groups
    c = Clustering.objects.create(key="behavior", name="Behavior", k_max=5)
    services.clustering_run_execute(clustering=c, now=now)
    numbers = _numbers("behavior")
    buyers_number = next(int(numbers[p]) for p, g in truth.items() if g == "buyers")
    p = Profile.objects.create()
    import random

    rng = random.Random(5)
    rows = []
    for d in range(10):
        rows += _visit(
            rng,
            source.source,
            p,
            now - timedelta(days=d + 0.5),
            pages=2,
            gap_seconds=30,
            category="shoes",
            cart=True,
            purchase=220.0,
        )
    Event.objects.bulk_create(rows)
    # when: its events are ingested (the real-time path calls this on a worker)
    services.realtime_assign(profile_ids=[p.pk])
    # then
    assert _numbers("behavior")[p.pk] == buyers_number
    assert Membership.objects.filter(profile=p, segment__slug=f"behavior-{buyers_number}").exists()


def test_too_few_profiles_fail_the_run_with_a_reason(source):
    c = Clustering.objects.create(key="behavior", name="Behavior")
    with pytest.raises(ClusteringFailed, match="at least 20"):
        services.clustering_run_execute(clustering=c)
    run = ClusteringRun.objects.get()
    assert run.status == "failed"
    assert "at least 20" in run.error
