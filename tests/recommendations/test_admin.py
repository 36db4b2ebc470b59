"""The merchant's catalog and the recommendation model versions' screens: the list and a
version's page with their charts and figures, "Train now" and a version's progress, the
neighbours explorer on planted bundles, serving an older version by hand, stock marked
in the catalog list, and versions without figures. The data is planted shopping that the
real services learn from."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from cdp.jobs import JobProgress
from cdp.models import AuditEvent, JobStatus
from recommendations import charts
from recommendations.evaluation import COMPARED, at_k
from recommendations.models import Item, ModelVersion, VersionStatus
from recommendations.selectors import catalog_current, models_active
from recommendations.services import catalog_sync, train_execute
from tests.admin_forms import form_fields

LIST = "admin:recommendations_modelversion_changelist"
TRAIN = "admin:recommendations_modelversion_train"
ITEMS = "admin:recommendations_item_changelist"


def version_url(version: ModelVersion) -> str:
    return reverse("admin:recommendations_modelversion_change", args=[version.pk])


def serve_url(version: ModelVersion) -> str:
    return reverse("admin:recommendations_modelversion_serve", args=[version.pk])


def svgs(page: str) -> dict[str, str]:
    """The page's charts by their name (`data-chart`)."""
    found = re.findall(
        r'(<svg [^>]*class="reco-chart"[^>]*data-chart="(\w+)".*?</svg>)', page, re.S
    )
    return {name: svg for svg, name in found}


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment))).strip()


def by_id(page: str, element_id: str) -> str:
    """The text of the element with this id (up to its closing tag)."""
    found = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', page, re.S)
    assert found, element_id
    return text_of(found.group(2))


def section(page: str, element_id: str) -> str:
    """The text of the element with this id, up to the end of its first table."""
    found = re.search(rf'id="{element_id}".*?</table>', page, re.S)
    assert found, element_id
    return text_of(found.group(0))


def neighbour_rows(page: str, model: str) -> list[tuple[str, str]]:
    """(item id, the row's text) of a model's neighbours in the explorer, best first."""
    table = re.search(rf'id="neighbours-{model}".*?</table>', page, re.S)
    assert table, model
    rows = re.findall(r'<tr class="neighbour" data-item="([^"]+)">(.*?)</tr>', table.group(0), re.S)
    return [(item, text_of(row)) for item, row in rows]


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def rows_of(page: str) -> list[str]:
    body = re.search(r'<table id="result_list">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert body, "result list"
    return [text_of(row) for row in re.findall(r"<tr.*?</tr>", body.group(1), re.S)]


@pytest.fixture
def catalog(shop) -> None:
    """The planted items in the catalog, as the periodic sync reads them from the events."""
    catalog_sync()


@pytest.fixture
def retrained(trained: ModelVersion) -> tuple[ModelVersion, ModelVersion]:
    """v1 and v2 on the same shopping: v2 is at least as good, so it is served."""
    newer = train_execute(requested_by="test")
    trained.refresh_from_db()
    newer.refresh_from_db()
    assert (trained.outcome, newer.outcome) == (VersionStatus.RETIRED, VersionStatus.ACTIVE)
    return trained, newer


# --- The versions list ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_versions_list_shows_each_version_its_figures_and_the_versions_chart(
    superuser_client, trained
):
    # when the marketer opens the list of model versions
    response = superuser_client.get(reverse(LIST))
    assert response.status_code == 200
    page = response.content.decode()
    # then it is titled for what it is, with a "Train now" button
    assert "Recommendation model versions" in page
    assert 'id="train-now"' in page
    # and the served version's row has its figures: recall@10 of the blend and of the
    # baseline, its outcome, its size and why it is served
    (row,) = rows_of(page)
    assert "v1" in row
    assert "Done" in row
    assert "Active (served)" in row
    assert pct(at_k(trained.metrics, "personal")) in row
    assert pct(at_k(trained.metrics, "popularity")) in row
    assert "KB" in row
    assert "the first version" in row
    # and the chart across versions, with an accessible name, marks the served one
    chart = svgs(page)["versions"]
    assert 'role="img"' in chart
    assert re.search(r'aria-label="[^"]+"', chart)
    assert f'class="active-version" data-version="{trained.version}"' in chart
    assert {"personal", "popularity", "item_item"} <= set(re.findall(r'data-series="(\w+)"', chart))


@pytest.mark.django_db
def test_the_list_reads_the_same_number_of_rows_whatever_the_number_of_versions(
    superuser_client, trained
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert superuser_client.get(reverse(LIST)).status_code == 200
        return len(ctx)

    # given one version, then four
    one = queries()
    for n in (2, 3, 4):
        ModelVersion.objects.create(
            version=n,
            requested_by="test",
            status=JobStatus.DONE,
            outcome=VersionStatus.REJECTED,
            metrics=trained.metrics,
            data=trained.data,
        )
    # then the list costs as many queries, and shows them all
    assert queries() == one
    page = superuser_client.get(reverse(LIST)).content.decode()
    assert len(rows_of(page)) == 4
    assert len(re.findall(r'<circle[^>]*data-version="\d+"', svgs(page)["versions"])) == 4 * 3


# --- A version's page ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_version_page_shows_its_data_parameters_charts_and_figures(superuser_client, trained):
    # when the marketer opens the served version
    response = superuser_client.get(version_url(trained))
    assert response.status_code == 200
    page = response.content.decode()
    # then three charts, each with an accessible name
    found = svgs(page)
    assert set(found) == {"recall_at_k", "ndcg_at_k", "versions"}
    for svg in found.values():
        assert 'role="img"' in svg
        assert "<title>" in svg
    # the grouped bars: one bar per compared model and k, popularity drawn as the baseline
    recall = found["recall_at_k"]
    for model in COMPARED:
        for k in trained.metrics["k"]:
            assert f'data-model="{model}" data-k="{k}"' in recall
    assert recall.count('class="baseline"') == len(trained.metrics["k"])
    assert "popularity (baseline)" in recall
    personal_10 = pct(at_k(trained.metrics, "personal"))
    assert f"personal blend (served): recall@10 = {personal_10}" in html.unescape(recall)
    ndcg_10 = at_k(trained.metrics, "personal", "ndcg")
    assert f"NDCG@10 = {ndcg_10:.3f}" in html.unescape(found["ndcg_at_k"])
    # this version highlighted on the chart across versions
    assert f'class="current-version" data-version="{trained.version}"' in found["versions"]
    # the headline figures say the blend beat the baseline, and by how much
    assert by_id(page, "recall-personal") == personal_10
    assert by_id(page, "recall-popularity") == pct(at_k(trained.metrics, "popularity"))
    lift = at_k(trained.metrics, "personal") - at_k(trained.metrics, "popularity")
    assert by_id(page, "recall-lift") == f"{lift * 100:+.1f} pp"
    # what it was trained on, and with which parameters
    data = section(page, "training-data")
    d = trained.data
    assert f"{d['interactions']:,}: {d['views']:,} views" in data
    assert f"{d['purchases']:,} purchases" in data
    assert f"Visitors {d['users']:,}" in data
    assert f"Baskets {d['baskets']:,}" in data
    assert f"{d['train_interactions']:,} / {d['test_interactions']:,}" in data
    assert f"bought together {d['neighbours']['bought_together']:,}" in data
    params = section(page, "params")
    assert f"holdout_fraction {trained.params['holdout_fraction']:g}" in params
    assert "blend" in params
    # it is served already: nothing to serve by hand, and nothing to edit
    assert 'id="serve-version"' not in page
    assert 'name="_save"' not in page


@pytest.mark.django_db
def test_the_neighbours_explorer_shows_a_planted_bundle_neighbour(superuser_client, shop, trained):
    # given an item of a planted bundle: the same shoppers cart and buy its mates together
    bundle = [shop.inter.item_ids[code] for code in shop.bundles[0]]
    item, mates = bundle[0], set(bundle[1:])
    # when the marketer asks for its neighbours
    page = superuser_client.get(version_url(trained), {"item": item}).content.decode()
    # then each model lists neighbours, best first, with their titles from the catalog:
    # bundle mates among those bought with it, a bundle mate the most similar item
    bought = neighbour_rows(page, "bought_together")
    mate, row = next((i, text) for i, text in bought if i in mates)
    assert f"Product {mate}" in row
    similar = neighbour_rows(page, "item_item")
    assert similar[0][0] in mates
    assert f"Product {similar[0][0]}" in similar[0][1]
    assert neighbour_rows(page, "next_item")
    # and an unknown item is said to be unknown
    page = superuser_client.get(version_url(trained), {"item": "no-such-sku"}).content.decode()
    assert "No item no-such-sku" in by_id(page, "neighbours-error")


@pytest.mark.django_db
def test_an_item_page_links_to_its_neighbours_in_the_served_version(
    superuser_client, shop, trained
):
    item = Item.objects.get(item_id=shop.inter.item_ids[shop.bundles[0][0]])
    page = superuser_client.get(
        reverse("admin:recommendations_item_change", args=[item.pk])
    ).content.decode()
    link = re.search(r'href="([^"]+)">Its neighbours in v1 \(served\)', page)
    assert link
    # (a browser keeps the fragment to itself; the test client would send it)
    url, fragment = html.unescape(link.group(1)).split("#")
    assert fragment == "neighbours"
    page = superuser_client.get(url).content.decode()
    assert f"{item.item_id} ({item.title}" in by_id(page, "neighbours-of")


# --- Train now and progress ----------------------------------------------------------------


@pytest.mark.django_db
def test_train_now_trains_a_new_version_that_the_list_shows(
    superuser_client, trained, celery_eager, django_capture_on_commit_callbacks
):
    # when the marketer presses "Train now" (the task is queued when the request commits)
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(reverse(TRAIN))
    # then the list comes back, saying so
    assert response.status_code == 302
    assert response["Location"] == reverse(LIST)
    assert any("Training of v2" in m for m in messages_of(response))
    # and the worker trained v2 on the same shopping: as good, so it is served
    version = ModelVersion.objects.get(version=2)
    assert version.status == JobStatus.DONE
    assert version.outcome == VersionStatus.ACTIVE
    assert version.requested_by == "user:admin"
    assert AuditEvent.objects.filter(
        action="recommendations.train_requested", actor="user:admin"
    ).exists()
    rows = rows_of(superuser_client.get(reverse(LIST)).content.decode())
    assert "v2" in rows[0]
    assert "Active (served)" in rows[0]
    assert "Retired" in rows[1]


@pytest.mark.django_db
def test_a_version_being_trained_shows_its_progress(
    superuser_client, trained, celery_queued, django_capture_on_commit_callbacks
):
    # given "Train now" pressed while the worker is busy: the version waits in the queue
    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(reverse(TRAIN), follow=True)
    assert celery_queued == ["recommendations.tasks.reco_train_version"]
    assert any("queued on a worker" in m for m in messages_of(response))
    version = ModelVersion.objects.get(version=2)
    assert version.status == JobStatus.QUEUED
    # when the worker starts it and reaches the evaluation (as the worker writes it)
    job = JobProgress(version, None)
    job.start()
    job("evaluating on the held-out split", 2, 4)
    # then the list shows the step and how far it is, and refreshes itself
    page = superuser_client.get(reverse(LIST)).content.decode()
    assert "Running: evaluating on the held-out split (2/4)" in rows_of(page)[0]
    assert 'http-equiv="refresh"' in page
    assert "v2 Running evaluating on the held-out split (2/4)" in text_of(page)
    # and so does the version's page, without figures or a serve button yet
    page = superuser_client.get(version_url(version)).content.decode()
    assert '<progress max="4" value="2">' in page
    assert by_id(page, "progress-step") == "evaluating on the held-out split (2/4)"
    assert "window.location.reload" in page
    assert "appear when the training is done" in by_id(page, "not-evaluated")
    assert set(svgs(page)) == {"versions"}
    assert "Not known yet" in by_id(page, "no-data")
    assert 'id="serve-version"' not in page


@pytest.mark.django_db
def test_someone_who_may_only_look_cannot_train_or_serve(trained):
    user = get_user_model().objects.create_user("viewer", password="pw-viewer-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_modelversion"))
    client = APIClient()
    client.force_login(user)
    # they see the list and the pages, without the buttons
    page = client.get(reverse(LIST)).content.decode()
    assert "Recommendation model versions" in page
    assert 'id="train-now"' not in page
    # and pressing them anyway is refused
    assert client.post(reverse(TRAIN)).status_code == 403
    assert client.post(serve_url(trained)).status_code == 403
    assert ModelVersion.objects.count() == 1


# --- Serving a version by hand -------------------------------------------------------------


@pytest.mark.django_db
def test_serving_an_older_version_by_hand_makes_it_the_served_one(superuser_client, retrained):
    older, newer = retrained
    # given the older version's page offers to serve it
    page = superuser_client.get(version_url(older)).content.decode()
    assert 'id="serve-version"' in page
    # when the marketer serves it
    response = superuser_client.post(serve_url(older), follow=True)
    # then it is served, the newer one retired, and the page says so
    assert response.status_code == 200
    assert any(
        f"served from v{older.version} now; v{newer.version} is retired" in m
        for m in messages_of(response)
    )
    older.refresh_from_db()
    newer.refresh_from_db()
    assert older.outcome == VersionStatus.ACTIVE
    assert newer.outcome == VersionStatus.RETIRED
    assert "served by hand by user:admin" in older.decision
    served = models_active()
    assert served is not None
    assert served.version == older.version
    # and it is in the audit log, under the marketer's name
    audit = AuditEvent.objects.get(action="recommendations.version_activated")
    assert (audit.actor, audit.object_id) == ("user:admin", str(older.pk))
    # and its page no longer offers to serve it
    page = response.content.decode()
    assert 'id="serve-version"' not in page
    assert "Active (served)" in page


@pytest.mark.django_db
def test_a_failed_version_shows_its_error_and_cannot_be_served(superuser_client, trained):
    failed = ModelVersion.objects.create(
        version=2,
        requested_by="test",
        status=JobStatus.FAILED,
        step="reading interactions",
        error="ValueError: no interactions to learn from",
    )
    page = superuser_client.get(version_url(failed)).content.decode()
    assert "no interactions to learn from" in page
    assert 'id="serve-version"' not in page
    response = superuser_client.post(serve_url(failed), follow=True)
    assert any("v2 cannot be served" in m for m in messages_of(response))
    failed.refresh_from_db()
    trained.refresh_from_db()
    assert failed.outcome == VersionStatus.CANDIDATE
    assert trained.outcome == VersionStatus.ACTIVE
    assert not AuditEvent.objects.filter(action="recommendations.version_activated").exists()


# --- The catalog ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_item_marked_out_of_stock_in_the_list_is_no_longer_offered(
    superuser_client, catalog, settings
):
    # given the catalog as web processes serve it (re-read whenever it changed)
    settings.CDP = {**settings.CDP, "RECO_CATALOG_TTL_SECONDS": 0}
    item = Item.objects.get(item_id="sku-3")
    assert catalog_current().available("sku-3")
    before = item.updated_at
    # when the merchant finds it in the list, unticks "in stock" on its row and saves
    url = reverse(ITEMS) + "?q=sku-3"
    data = form_fields(superuser_client.get(url).content.decode(), "changelist-form")
    (row,) = [
        k.removesuffix("-id") for k, v in data.items() if k.endswith("-id") and v == str(item.pk)
    ]
    assert data.pop(f"{row}-in_stock") == "on"
    response = superuser_client.post(url, {**data, "_save": "Save"})
    # then it is saved (and audited), and the served catalog no longer offers it
    assert response.status_code == 302
    item.refresh_from_db()
    assert not item.in_stock
    assert item.updated_at > before
    assert not catalog_current().available("sku-3")
    assert catalog_current().available("sku-4")
    assert AuditEvent.objects.filter(
        action="admin.recommendations.item.changed", object_id=str(item.pk)
    ).exists()
    # and the list filtered on stock shows it
    rows = rows_of(superuser_client.get(reverse(ITEMS), {"in_stock__exact": "0"}).content.decode())
    assert len(rows) == 1
    assert "sku-3" in rows[0]


@pytest.mark.django_db
def test_the_catalog_is_searched_and_filtered(superuser_client, catalog):
    rows = rows_of(superuser_client.get(reverse(ITEMS), {"q": "Product sku-12"}).content.decode())
    assert len(rows) == 1
    assert "sku-12" in rows[0]
    assert "cat-0" in rows[0]
    rows = rows_of(superuser_client.get(reverse(ITEMS), {"category": "cat-2"}).content.decode())
    assert rows
    assert all("cat-2" in row for row in rows)
    assert len(rows) == Item.objects.filter(category="cat-2").count()


# --- Versions without figures --------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("metrics", "says"),
    [
        ({}, "No evaluation figures"),
        ({"k": [1, 5, 10, 20], "users": 0, "models": {}}, "Not evaluated: no visitor"),
    ],
)
def test_a_version_without_figures_shows_messages_instead_of_charts(
    superuser_client, metrics, says
):
    version = ModelVersion.objects.create(
        version=1,
        requested_by="test",
        status=JobStatus.DONE,
        outcome=VersionStatus.REJECTED,
        metrics=metrics,
        data={},
    )
    # the version's page renders, each chart says in words why it is empty
    response = superuser_client.get(version_url(version), {"item": "sku-1"})
    assert response.status_code == 200
    page = response.content.decode()
    found = svgs(page)
    assert says in text_of(found["recall_at_k"])
    assert says in text_of(found["ndcg_at_k"])
    assert "No version could be evaluated yet" in text_of(found["versions"])
    assert says in by_id(page, "not-evaluated")
    assert "No training data recorded" in by_id(page, "no-data")
    assert "has no trained models to explore" in by_id(page, "neighbours-error")
    # and the list shows no figure for it
    (row,) = rows_of(superuser_client.get(reverse(LIST)).content.decode())
    assert "%" not in row
    assert "—" in row


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
METRICS = st.fixed_dictionaries(
    {},
    optional={
        "k": st.lists(st.integers(-2, 30) | st.booleans(), max_size=5) | JSON,
        "users": st.integers(-1, 10) | JSON,
        "models": st.dictionaries(
            st.sampled_from([*COMPARED, "other"]),
            st.fixed_dictionaries(
                {},
                optional={
                    m: st.lists(st.floats() | st.none() | st.text(max_size=2), max_size=6)
                    for m in ("recall", "ndcg", "hit_rate")
                },
            )
            | JSON,
        )
        | JSON,
    },
)
FIGURE = st.none() | st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(metrics=METRICS | JSON, measure=st.sampled_from(["recall", "ndcg", "hit_rate"]))
def test_the_bar_charts_draw_whatever_the_stored_metrics(metrics, measure):
    svg = charts.at_k_chart(metrics=metrics, measure=measure)
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    assert svg.count("<svg") == 1
    assert not re.search(r' (?:x|y|x1|x2|y1|y2|width|height)="[^"]*(?:nan|inf)', svg)


@settings(max_examples=150, deadline=None)
@given(
    points=st.lists(
        st.builds(
            charts.VersionPoint,
            version=st.integers(1, 10_000),
            personal=FIGURE,
            popularity=FIGURE,
            item_item=FIGURE,
            outcome=st.sampled_from([s.value for s in VersionStatus]),
            decision=st.text(max_size=30),
        ),
        max_size=40,
        unique_by=lambda p: p.version,
    ),
    current=st.none() | st.integers(1, 10_000),
)
def test_the_versions_chart_draws_whatever_the_versions(points, current):
    svg = charts.versions_chart(points=points, current=current)
    assert svg.startswith("<svg ")
    assert svg.endswith("</svg>")
    assert not re.search(r' (?:x|y|x1|x2|y1|y2|cx|cy|width|height|points)="[^"]*(?:nan|inf)', svg)
