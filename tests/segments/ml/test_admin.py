"""The marketer's clustering and predictor screens: the current run's and version's
charts, the threshold picker, "Run now" / "Train now", the definition checks on the
fields they name, and the read-only runs and versions. The data is planted behaviour
that the real services cluster and learn."""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cdp.models import AuditEvent, JobStatus
from segments.ml import charts
from segments.ml.clustering import ClusteringFailed
from segments.ml.services import clustering_run_execute, predictor_train_execute
from segments.models import (
    Clustering,
    ClusteringRun,
    Predictor,
    PredictorVersion,
    ProfileScore,
)
from tests.segments.ml.planted import planted_churn, planted_groups

HORIZON = 30


def svgs(page: str) -> dict[str, str]:
    """The page's charts by their name (`data-chart`)."""
    found = re.findall(r'(<svg [^>]*class="ml-chart"[^>]*data-chart="(\w+)".*?</svg>)', page, re.S)
    return {name: svg for svg, name in found}


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def found(pattern: str, page: str, group: int = 0) -> str:
    match = re.search(pattern, page, re.S)
    assert match, pattern
    return match.group(group)


def by_id(page: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', page, re.S)
    assert found, element_id
    return text_of(found.group(1))


@pytest.fixture
def now() -> datetime:
    # "Run now" runs as of the real now: the planted behaviour is relative to it too.
    return timezone.now()


@pytest.fixture
def clustered(source, now) -> tuple[Clustering, ClusteringRun]:
    planted_groups(source.source, per_group=40, now=now)
    clustering = Clustering.objects.create(key="behaviour", name="Behaviour", k_min=2, k_max=6)
    run = clustering_run_execute(clustering=clustering, now=now)
    run.refresh_from_db()
    return clustering, run


@pytest.fixture
def trained(source, now) -> tuple[Predictor, PredictorVersion]:
    planted_churn(source.source, profiles=300, now=now, horizon_days=HORIZON)
    # logistic regression: the fastest of the three to train, the pages are the same
    predictor = Predictor.objects.create(
        key="churn",
        name="Churn risk",
        target="churn",
        horizon_days=HORIZON,
        algorithm="logistic_regression",
    )
    version = predictor_train_execute(predictor=predictor, now=now)
    version.refresh_from_db()
    return predictor, version


def change_url(obj: Clustering | Predictor) -> str:
    return reverse(f"admin:segments_{obj._meta.model_name}_change", args=[obj.pk])


# --- clustering ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_clustering_page_and_list_show_the_current_run(superuser_client, clustered):
    clustering, run = clustered
    # when the marketer opens the clustering
    page = superuser_client.get(change_url(clustering)).content.decode()
    # then the charts of its current run are there, each with an accessible name
    charts_on_page = svgs(page)
    assert set(charts_on_page) >= {"silhouette", "inertia", "projection"}
    for svg in charts_on_page.values():
        assert 'role="img"' in svg
        assert re.search(r'aria-label="[^"]+"', svg)
        assert "<title>" in svg
    # the chosen k is marked on both k charts (the planted data has three behaviours)
    assert run.k == 3
    for name in ("silhouette", "inertia"):
        assert f'data-k="{run.k}"' in charts_on_page[name]
        assert f"chosen k = {run.k}" in charts_on_page[name]
    # the scatter's legend names every cluster by its label, coloured by its number
    projection = html.unescape(charts_on_page["projection"])
    for cluster in run.clusters:
        assert cluster["label"][:40] in projection
        assert f'data-cluster="{cluster["number"]}"' in projection
    # the headline figures and the clusters with their segments
    assert by_id(page, "run-silhouette") == f"{run.silhouette:.3f}"
    assert by_id(page, "run-stability") == f"ARI {run.stability['ari_mean']:.3f}"
    clusters = text_of(found(r'<table class="ml-table" id="clusters">(.*?)</table>', page, 1))
    for cluster in run.clusters:
        assert cluster["label"] in clusters
        assert cluster["segment"] in clusters
    # the centroid table: one row per feature, one column per cluster, shaded by z
    table = found(r'<table class="ml-table" id="centroids">(.*?)</table>', page, 1)
    assert len(re.findall(r'<tr><th scope="row"', table)) == len(run.clusters[0]["centroid"])
    assert "background: rgba(" in table
    # and the run is in the runs table, done
    assert f'data-job="{run.pk}"' in page
    assert "Done" in page
    # and the list shows the current run's figures (or that a clustering never ran)
    Clustering.objects.create(key="never-run", name="Never run")
    page = superuser_client.get(reverse("admin:segments_clustering_changelist")).content.decode()
    row = text_of(found(r"<tr>(?:(?!</tr>).)*behaviour(?:(?!</tr>).)*</tr>", page, 0))
    assert f"{run.silhouette:.3f}" in row
    assert f"{run.stability['ari_mean']:.2f}" in row
    assert "Done" in row
    assert "never" in text_of(page)


@pytest.mark.django_db
def test_run_now_queues_a_run_that_the_worker_runs(
    superuser_client, clustered, celery_eager, django_capture_on_commit_callbacks
):
    clustering, first = clustered
    url = reverse("admin:segments_clustering_queue", args=[clustering.pk])
    # when the marketer presses "Run now" (the task is queued when the request commits)
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(url)
    assert response.status_code == 302
    # then a new run was made, ran, and is now the current one
    run = ClusteringRun.objects.exclude(pk=first.pk).get()
    assert run.status == JobStatus.DONE
    assert run.is_current
    assert run.requested_by == "user:admin"
    assert AuditEvent.objects.filter(action="ml.clustering_run_requested").exists()
    page = superuser_client.get(response["Location"]).content.decode()
    assert f"Run #{run.pk} of behaviour queued" in page
    assert f'data-job="{run.pk}"' in page


@pytest.mark.django_db
def test_the_run_now_action_queues_one_run_per_clustering(
    superuser_client, source, celery_queued, django_capture_on_commit_callbacks
):
    a = Clustering.objects.create(key="a", name="A")
    b = Clustering.objects.create(key="b", name="B")
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:segments_clustering_changelist"),
            {"action": "run_now", "_selected_action": [a.pk, b.pk]},
            follow=True,
        )
    assert celery_queued == ["segments.tasks.ml_clustering_run"] * 2
    assert ClusteringRun.objects.filter(status=JobStatus.QUEUED).count() == 2
    assert any("queued on a worker" in m for m in messages_of(response))
    # the clustering's page follows a queued run
    page = superuser_client.get(change_url(a)).content.decode()
    assert "Queued" in page
    assert "window.location.reload" in page
    assert 'id="no-run"' in page


@pytest.mark.django_db
def test_a_failed_run_shows_its_error_on_the_page(
    superuser_client, source, celery_eager, django_capture_on_commit_callbacks
):
    clustering = Clustering.objects.create(key="empty", name="Nobody yet")
    # no profile has any event: the run cannot fit (the worker records why)
    with pytest.raises(ClusteringFailed), django_capture_on_commit_callbacks(execute=True):
        superuser_client.post(reverse("admin:segments_clustering_queue", args=[clustering.pk]))
    run = ClusteringRun.objects.get()
    assert run.status == JobStatus.FAILED
    page = superuser_client.get(change_url(clustering)).content.decode()
    assert "Failed" in page
    assert html.escape("at least 20 are needed") in page
    assert "No finished run yet" in page


def clustering_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Behaviour",
        "key": "behaviour",
        "active": "on",
        "algorithm": "kmeans",
        "k_min": 2,
        "k_max": 6,
        "features": "[]",
        "scaling": "robust",
        "outliers": "iqr_clip",
        "pca_components": "",
        "lookback_days": 180,
        "sample_size": 10000,
        "eps": 0.5,
        "min_samples": 10,
        "retrain_every_days": 7,
        **fields,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"features": '["recency_days", "shoe_size"]'}, "features", "unknown: shoe_size"),
        ({"features": '{"recency_days": 1}'}, "features", "A list of feature names"),
        ({"k_min": 5, "k_max": 3}, "k_max", "needs 2 <= k_min <= k_max"),
    ],
)
def test_a_clustering_that_cannot_run_is_refused_on_the_field(
    superuser_client, fields, field, words
):
    response = superuser_client.post(
        reverse("admin:segments_clustering_add"), clustering_form(**fields)
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert words in " ".join(errors[field])
    assert html.escape(words) in response.content.decode()
    assert not Clustering.objects.exists()


@pytest.mark.django_db
def test_saving_a_clustering_is_audited_and_its_key_is_fixed_once_it_ran(
    superuser_client, clustered
):
    clustering, _ = clustered
    response = superuser_client.post(
        change_url(clustering), clustering_form(name="Shoppers", key="renamed")
    )
    assert response.status_code == 302
    clustering.refresh_from_db()
    assert clustering.name == "Shoppers"
    assert clustering.key == "behaviour"  # read-only: it names the scores and segments
    assert AuditEvent.objects.filter(action="admin.segments.clustering.changed").exists()


# --- predictors ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_predictor_page_and_list_show_the_current_version(superuser_client, trained):
    predictor, version = trained
    page = superuser_client.get(change_url(predictor)).content.decode()
    auc = f"{version.metrics['holdout_auc']:.3f}"
    # the held-out AUC, as a headline figure and on the ROC curve
    assert by_id(page, "holdout-auc") == auc
    charts_on_page = svgs(page)
    assert set(charts_on_page) >= {"roc", "thresholds", "calibration", "importances"}
    assert f"AUC {auc}" in charts_on_page["roc"]
    assert 'class="diagonal"' in charts_on_page["roc"]
    assert 'class="diagonal"' in charts_on_page["calibration"]
    for svg in charts_on_page.values():
        assert 'role="img"' in svg
        assert "<title>" in svg
    # precision and recall by threshold, with the saved threshold marked
    assert 'data-series="precision"' in charts_on_page["thresholds"]
    assert 'data-series="recall"' in charts_on_page["thresholds"]
    assert 'data-threshold="0.50"' in charts_on_page["thresholds"]
    # the most important features by name
    top = version.metrics["importances"][0]["feature"]
    assert f'data-feature="{top}"' in charts_on_page["importances"]
    # the version in the versions table, and nothing of the fitted model
    assert f'data-job="{version.pk}"' in page
    assert "first version" in page
    assert "model_blob" not in page
    # and the list shows the current version's figures
    page = superuser_client.get(reverse("admin:segments_predictor_changelist")).content.decode()
    row = text_of(found(r"<tr>(?:(?!</tr>).)*Churn risk(?:(?!</tr>).)*</tr>", page, 0))
    assert f"{version.metrics['holdout_auc']:.3f}" in row
    assert f"v{version.version}" in row
    assert str(ProfileScore.objects.filter(model="churn").count()) in row


@pytest.mark.django_db
def test_the_threshold_picker_counts_the_profiles_a_threshold_selects(superuser_client, trained):
    predictor, version = trained
    scores = ProfileScore.objects.filter(model="churn")
    # when the marketer moves the picker to 0.35
    page = superuser_client.get(change_url(predictor), {"threshold": "0.35"}).content.decode()
    # then the page says how many profiles score at least that now
    assert by_id(page, "threshold-count") == str(scores.filter(score__gte=0.35).count())
    assert f"of the {scores.count()} scored profiles" in text_of(page)
    # and what that threshold did on the held-out profiles
    held_out = next(r for r in version.metrics["by_threshold"] if r["threshold"] == 0.35)
    assert by_id(page, "threshold-precision") == f"{held_out['precision'] * 100:.1f}%"
    assert by_id(page, "threshold-recall") == f"{held_out['recall'] * 100:.1f}%"
    # the chart marks the picked threshold, the range input keeps it
    assert 'data-threshold="0.35"' in svgs(page)["thresholds"]
    assert re.search(r'<input type="range"[^>]*name="threshold"[^>]*value="0.35"', page, re.S)
    # and the table for 0.1 … 0.9 counts each threshold's profiles
    rows = re.findall(
        r'<tr class="threshold-row[^"]*" data-threshold="([\d.]+)">(.*?)</tr>', page, re.S
    )
    assert [t for t, _ in rows] == [f"{t / 10:.2f}" for t in range(1, 10)]
    for t, row in rows:
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        assert text_of(cells[1]) == str(scores.filter(score__gte=float(t)).count())
    # a threshold that is not one falls back to the saved threshold, saying so
    page = superuser_client.get(change_url(predictor), {"threshold": "lots"}).content.decode()
    assert "is not a number" in html.unescape(page)
    count = ProfileScore.objects.filter(model="churn", score__gte=predictor.threshold).count()
    assert by_id(page, "threshold-count") == str(count)


@pytest.mark.django_db
def test_train_now_trains_a_new_version(
    superuser_client, trained, celery_eager, django_capture_on_commit_callbacks
):
    predictor, _ = trained
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:segments_predictor_queue", args=[predictor.pk])
        )
    assert response.status_code == 302
    second = PredictorVersion.objects.get(predictor=predictor, version=2)
    assert second.status == JobStatus.DONE
    assert second.decision  # kept or replaced v1, in words
    page = superuser_client.get(change_url(predictor)).content.decode()
    assert f'data-job="{second.pk}"' in page
    assert html.escape(second.decision) in page


@pytest.mark.django_db
def test_a_predictor_without_versions_says_so(superuser_client, source):
    predictor = Predictor.objects.create(key="buyers", name="Will buy", target="purchase")
    page = superuser_client.get(change_url(predictor)).content.decode()
    assert "No trained version yet" in page
    assert 'id="threshold"' not in page
    assert "Train now" in page


def predictor_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "Churn",
        "key": "churn",
        "active": "on",
        "target": "churn",
        "target_event": "",
        "horizon_days": 30,
        "lookback_days": 180,
        "algorithm": "gradient_boosting",
        "threshold": 0.5,
        "retrain_every_days": 7,
        **fields,
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"target": "event"}, "target_event", "required for the event target"),
        ({"key": "behaviour"}, "key", "already a clustering's score"),
        ({"threshold": 1.5}, "threshold", "between 0 and 1"),
    ],
)
def test_a_predictor_that_cannot_train_is_refused_on_the_field(
    superuser_client, fields, field, words
):
    Clustering.objects.create(key="behaviour", name="Behaviour")
    response = superuser_client.post(
        reverse("admin:segments_predictor_add"), predictor_form(**fields)
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert words in " ".join(errors[field])
    assert not Predictor.objects.exists()


# --- runs and versions are read-only --------------------------------------------------------


@pytest.mark.django_db
def test_runs_and_versions_can_be_read_but_never_edited(superuser_client, clustered, trained):
    _, run = clustered
    _, version = trained
    for obj in (run, version):
        name = obj._meta.model_name
        url = reverse(f"admin:segments_{name}_change", args=[obj.pk])
        page = superuser_client.get(url).content.decode()
        assert 'name="_save"' not in page
        assert "model_blob" not in page
        assert superuser_client.post(url, {}).status_code == 403
        assert superuser_client.get(reverse(f"admin:segments_{name}_add")).status_code == 403
        listing = superuser_client.get(reverse(f"admin:segments_{name}_changelist"))
        assert listing.status_code == 200
    # a run's page has its own charts, a version's too
    assert "silhouette" in svgs(
        superuser_client.get(
            reverse("admin:segments_clusteringrun_change", args=[run.pk])
        ).content.decode()
    )
    version_page = superuser_client.get(
        reverse("admin:segments_predictorversion_change", args=[version.pk])
    ).content.decode()
    assert f"AUC {version.metrics['holdout_auc']:.3f}" in svgs(version_page)["roc"]


@pytest.mark.django_db
def test_deleting_a_clustering_takes_its_runs(superuser_client, clustered):
    clustering, _ = clustered
    url = reverse("admin:segments_clustering_delete", args=[clustering.pk])
    assert "Are you sure" in superuser_client.get(url).content.decode()
    superuser_client.post(url, {"post": "yes"})
    assert not Clustering.objects.exists()
    assert not ClusteringRun.objects.exists()


# --- the charts with little or nothing to draw ----------------------------------------------


@pytest.mark.parametrize(
    ("scores", "chosen", "words"),
    [
        ([], None, "No finished run yet"),
        ([{"k": 3, "silhouette": 0.4, "inertia": 10.0}], 3, "Only k = 3 was tried"),
        ([{"k": 2, "silhouette": None, "inertia": 5.0}], 2, "No silhouette"),
        ("nonsense", "x", "No finished run yet"),
    ],
)
def test_the_k_charts_say_when_there_is_no_curve(scores, chosen, words):
    svg = charts.silhouette_chart(scores_by_k=scores, chosen_k=chosen)
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert words in svg
    assert 'role="img"' in svg
    assert charts.inertia_chart(scores_by_k=scores, chosen_k=chosen).endswith("</svg>")


def test_a_silhouette_missing_for_one_k_breaks_the_line_but_keeps_the_rest():
    scores = [
        {"k": 2, "silhouette": 0.5, "inertia": 9.0},
        {"k": 3, "silhouette": None, "inertia": 5.0},
        {"k": 4, "silhouette": 0.6, "inertia": float("nan")},
    ]
    svg = charts.silhouette_chart(scores_by_k=scores, chosen_k=4)
    assert svg.count("<circle") == 2
    assert "<polyline" not in svg  # no two neighbouring values to join
    assert 'data-k="4"' in svg
    assert "nan" not in charts.inertia_chart(scores_by_k=scores, chosen_k=4).lower()


@pytest.mark.parametrize("empty", [None, [], [[None, 1]], "x"])
def test_the_predictor_charts_say_when_there_is_nothing_to_draw(empty):
    for svg in (
        charts.roc_chart(roc=empty, auc=None),
        charts.threshold_chart(by_threshold=empty, threshold=0.5),
        charts.calibration_chart(calibration=empty, brier=None),
        charts.importance_chart(importances=empty),
        charts.projection_chart(projection=empty, clusters=empty),
    ):
        assert svg.startswith("<svg")
        assert svg.endswith("</svg>")
        assert re.search(r"No [\w ]+ yet|No ROC curve", svg)
    table = charts.centroid_table(clusters=empty)
    assert table.rows == []


def test_labels_are_escaped_in_the_charts():
    clusters = [{"number": 1, "label": "<script>x</script>", "size": 2, "centroid": {}, "z": {}}]
    svg = charts.projection_chart(projection=[[0.0, 1.0, 1], [1.0, 0.0, 1]], clusters=clusters)
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg


@pytest.mark.django_db
def test_the_lists_read_a_fixed_number_of_queries(superuser_client):
    def queries(name: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = superuser_client.get(reverse(f"admin:segments_{name}_changelist"))
        assert response.status_code == 200
        return len(ctx.captured_queries)

    def add(i: int) -> None:
        c = Clustering.objects.create(key=f"c{i}", name=f"C{i}")
        ClusteringRun.objects.create(
            clustering=c, requested_by="t", status=JobStatus.DONE, is_current=True, k=3
        )
        p = Predictor.objects.create(key=f"p{i}", name=f"P{i}")
        PredictorVersion.objects.create(
            predictor=p, version=1, requested_by="t", status=JobStatus.DONE, is_current=True
        )

    add(0)
    one = {name: queries(name) for name in ("clustering", "predictor")}
    for i in range(1, 5):
        add(i)
    assert {name: queries(name) for name in ("clustering", "predictor")} == one
