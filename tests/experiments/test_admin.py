"""The marketer's experiment screens: the list, the form saved through experiment_save
(its errors on the field they name), start / pause / stop, the results page with its
warnings, tables and charts, "Refresh now", the CSV export, and who may see them."""

from __future__ import annotations

import csv
import html
import io
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from cdp.models import AuditEvent
from experiments import admin as experiments_admin
from experiments import charts, services
from experiments import tasks as experiments_tasks
from experiments.models import Experiment, Exposure, ResultSnapshot, Status
from experiments.selectors import results_latest
from profiles.models import Event, Profile
from rules import services as rules_services
from rules.models import Slot
from tests.admin_forms import form_fields as admin_form_fields

pytestmark = pytest.mark.django_db

CONVERSION = {"event": "purchase", "kind": "conversion", "primary": True}
REVENUE = {"event": "purchase", "kind": "revenue", "property": "revenue"}
HALVES = [{"key": "control", "weight": 0.5}, {"key": "sale", "weight": 0.5}]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def hero(db: Any) -> Slot:
    return rules_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[{"key": "control", "title": "Welcome"}, {"key": "sale", "title": "Sale"}],
        default_variant="control",
    )


def make(
    slot: Slot | None,
    key: str = "hero-test",
    *,
    variants: list[dict[str, Any]] | None = None,
    goals: list[dict[str, Any]] | None = None,
    start: bool = False,
    **fields: Any,
) -> Experiment:
    exp = services.experiment_save(
        experiment=Experiment(key=key, name=key.replace("-", " ").title(), slot=slot, **fields),
        actor="test",
        variants=variants or HALVES,
        goals=goals or [CONVERSION],
    )
    if start:
        services.experiment_transition(experiment=exp, move="start", actor="test")
    return exp


def expose(
    exp: Experiment,
    source: Any,
    plan: dict[str, tuple[int, int]],
    *,
    days_ago: tuple[int, ...] = (3,),
    before: int = 0,
) -> None:
    """Per variant (exposed users, converters): profiles exposed `days_ago` (cycling), the
    converters buying an hour after their exposure (revenue 10 + i % 7), and the first
    `before` of each variant also buying a day before it (CUPED's covariate)."""
    now = timezone.now()
    profiles, exposures, events = [], [], []

    def purchase(profile: Profile, at: Any, revenue: float) -> Event:
        return Event(
            source=source.source,
            message_id=uuid.uuid4().hex,
            profile=profile,
            type="track",
            event="purchase",
            timestamp=at,
            received_at=at,
            properties={"revenue": revenue},
        )

    for variant, (n, converters) in plan.items():
        for i in range(n):
            profile = Profile(id=uuid.uuid4())
            profiles.append(profile)
            at = now - timedelta(days=days_ago[i % len(days_ago)])
            exposures.append(
                Exposure(experiment=exp, profile_id=profile.id, variant=variant, exposed_at=at)
            )
            if i < converters:
                events.append(purchase(profile, at + timedelta(hours=1), 10.0 + i % 7))
            if i < before:
                events.append(purchase(profile, at - timedelta(days=1), 5.0 + i % 3))
    Profile.objects.bulk_create(profiles)
    Exposure.objects.bulk_create(exposures)
    Event.objects.bulk_create(events)


def latest_payload(exp: Experiment) -> dict[str, Any]:
    snapshot = results_latest(experiment=exp)
    assert snapshot is not None
    return snapshot.payload


def results_url(exp: Experiment) -> str:
    return reverse("admin:experiments_experiment_results", args=[exp.pk])


def text_of(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment.replace("<br>", " "))).strip()


def goal_tables(page: str) -> list[dict[str, list[str]]]:
    """Every goal table on the results page: variant key → its cells' text."""
    out = []
    for table in re.findall(r'<table class="goal-table">(.*?)</table>', page, re.DOTALL):
        rows = {}
        for row in re.findall(r'<tr class="variant-row">(.*?)</tr>', table, re.DOTALL):
            cells = [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)]
            rows[cells[0].removesuffix(" (control)")] = cells
        out.append(rows)
    return out


def svgs(page: str) -> list[str]:
    """The charts (not the admin's theme icons)."""
    return re.findall(r'<svg [^>]*class="experiment-chart".*?</svg>', page, re.DOTALL)


def form_fields(page: str, form_id: str = "experiment_form") -> dict[str, str]:
    return admin_form_fields(page, form_id)


def add_form(
    slot: Slot | None,
    variants: list[dict[str, Any]],
    goals: list[dict[str, Any]],
    **fields: Any,
) -> dict[str, Any]:
    """What the add page posts: the experiment's fields and both inlines."""
    data: dict[str, Any] = {
        "name": "Hero test",
        "key": "hero-test",
        "hypothesis": "",
        "slot": slot.pk if slot else "",
        "audience": "",
        "traffic": "1.0",
        "namespace": "",
        "namespace_start": "0.0",
        "namespace_end": "1.0",
        "seed": "",
        "factors": "[]",
        "confidence": "0.95",
        "minimum_detectable_effect": "0.05",
        "variants-TOTAL_FORMS": len(variants),
        "variants-INITIAL_FORMS": 0,
        "variants-MIN_NUM_FORMS": 0,
        "variants-MAX_NUM_FORMS": 1000,
        "goals-TOTAL_FORMS": len(goals),
        "goals-INITIAL_FORMS": 0,
        "goals-MIN_NUM_FORMS": 0,
        "goals-MAX_NUM_FORMS": 1000,
    }
    for i, v in enumerate(variants):
        data.update({f"variants-{i}-{k}": value for k, value in v.items()})
    for i, g in enumerate(goals):
        row = {"kind": "conversion", "property": "", "where": "[]", "window_seconds": 604800}
        row.update(g)
        if not row.pop("primary", False):
            row.pop("primary", None)
        else:
            row["primary"] = "on"
        data.update({f"goals-{i}-{k}": value for k, value in row.items()})
    data.update(fields)
    return data


# --- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_experiment_in_a_constant_number_of_queries(
    superuser_client, hero, source
):
    # Given two experiments with exposures, one running
    first = make(hero, "hero-test", start=True)
    expose(first, source, {"control": (3, 1), "sale": (2, 0)})
    make(None, "flag-test", goals=[CONVERSION, REVENUE])
    url = reverse("admin:experiments_experiment_changelist")

    # When the marketer opens the list
    with CaptureQueriesContext(connection) as two:
        page = superuser_client.get(url).content.decode()

    # Then each row shows its slot, status, exposures, primary goal and results link
    listing = page.split('id="result_list"', 1)[1].split("</table>", 1)[0]
    row = next(
        (r for r in re.finditer(r"<tr>.*?</tr>", listing, re.DOTALL) if "hero-test" in r.group(0)),
        None,
    )
    assert row, page
    cells = [text_of(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(0), re.DOTALL)]
    assert cells[1:] == [
        "Hero Test",
        "hero-test",
        "Running",
        "home_hero",
        "1.0",
        "5",
        "purchase (conversion)",
        "Results",
        f"{timezone.localtime(first.started_at):%Y-%m-%d}",
        "—",
    ]
    assert results_url(first) in row.group(0)

    # and four more experiments cost no extra query
    for i in range(4):
        exp = make(hero if i % 2 else None, f"more-{i}", goals=[REVENUE, CONVERSION])
        expose(exp, source, {"control": (1, 0), "sale": (1, 1)})
    with CaptureQueriesContext(connection) as six:
        page = superuser_client.get(url).content.decode()
    assert page.count('class="action-select"') == 6
    assert len(six) == len(two), [q["sql"] for q in six.captured_queries]


def test_the_list_filters_by_status_and_searches_keys_and_names(superuser_client, hero):
    make(hero, "hero-test", start=True)
    make(hero, "checkout-copy")
    url = reverse("admin:experiments_experiment_changelist")

    running = superuser_client.get(url, {"status__exact": "running"}).content.decode()
    found = superuser_client.get(url, {"q": "checkout"}).content.decode()

    assert "hero-test" in running
    assert "checkout-copy" not in running
    assert "checkout-copy" in found
    assert "hero-test" not in found


def test_experiments_appear_in_the_admin_index(superuser_client):
    page = superuser_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:experiments_experiment_changelist") in page
    assert "Experiments" in page


# --- the form ----------------------------------------------------------------------------


def test_creating_an_experiment_stores_it_with_its_variants_and_goals(superuser_client, hero):
    # When a marketer fills in the add form with three variants and two goals
    data = add_form(
        hero,
        [
            {"key": "control", "weight": "0.5", "content": ""},
            {"key": "sale", "weight": "0.25", "content": '{"title": "Big sale"}'},
            {"key": "bold", "weight": "0.25", "content": ""},
        ],
        [{"event": "purchase", "primary": True}, {**REVENUE, "window_seconds": 86400}],
        audience='{"context": "device", "op": "eq", "value": "mobile"}',
        traffic="0.5",
    )
    response = superuser_client.post(reverse("admin:experiments_experiment_add"), data)

    # Then it is stored as a draft, with its variants in order and its goals
    assert response.status_code == 302, response.content.decode()
    exp = Experiment.objects.get(key="hero-test")
    assert (exp.status, exp.slot, exp.traffic) == (Status.DRAFT, hero, 0.5)
    assert exp.audience == {"context": "device", "op": "eq", "value": "mobile"}
    assert list(exp.variants.values_list("index", "key", "weight", "content")) == [
        (0, "control", 0.5, {}),
        (1, "sale", 0.25, {"title": "Big sale"}),
        (2, "bold", 0.25, {}),
    ]
    assert list(
        exp.goals.values_list("event", "kind", "property", "window_seconds", "primary")
    ) == [
        ("purchase", "conversion", "", 604800, True),
        ("purchase", "revenue", "revenue", 86400, False),
    ]
    # and both the admin change and the service's save are audited
    entry = AuditEvent.objects.get(action="admin.experiments.experiment.added")
    assert (entry.actor, entry.object_id) == ("user:admin", str(exp.pk))
    assert AuditEvent.objects.filter(action="experiment.created", actor="user:admin").exists()


def test_a_multivariate_experiment_gets_its_variants_from_its_factors(superuser_client, hero):
    data = add_form(
        hero,
        [],
        [{"event": "purchase", "primary": True}],
        factors='[{"name": "color", "levels": ["red", "blue"]}, {"name": "size", "levels": ["s", "l"]}]',
    )
    response = superuser_client.post(reverse("admin:experiments_experiment_add"), data)

    assert response.status_code == 302, response.content.decode()
    exp = Experiment.objects.get(key="hero-test")
    assert list(exp.variants.values_list("key", "weight")) == [
        ("red-s", 0.25),
        ("red-l", 0.25),
        ("blue-s", 0.25),
        ("blue-l", 0.25),
    ]


def _inline_errors(response: Any, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
    for inline in response.context["inline_admin_formsets"]:
        if inline.formset.prefix == prefix:
            return inline.formset.errors, list(inline.formset.non_form_errors())
    raise AssertionError(prefix)


@pytest.mark.parametrize(
    ("case", "where", "message"),
    [
        ("weights", ("variants", None, None), "weights must sum to 1 (they sum to 0.9)"),
        ("one variant", ("variants", None, None), "at least two variants"),
        ("bad key", ("variants", 1, "key"), "Enter a valid “slug”"),
        ("unknown event", ("goals", 1, "event"), "goals[1].event: unknown event 'signed_up'"),
        ("revenue property", ("goals", 0, "property"), "a revenue goal names its numeric property"),
        ("bad where", ("goals", 0, "where"), "goals[0].where"),
        ("two primaries", ("goals", None, None), "only one goal can be primary"),
        ("window", ("goals", 0, "window_seconds"), "goals[0].window_seconds: whole minutes"),
        ("no goal", ("goals", None, None), "at least one goal"),
        ("namespace", ("experiment", None, "namespace"), "overlaps experiment other-test"),
        ("namespace range", ("experiment", None, "namespace"), "0 ≤ start < end ≤ 1"),
        ("audience", ("experiment", None, "audience"), "audience: "),
        ("audience json", ("experiment", None, "audience"), "Enter a valid JSON."),
        ("audience list", ("experiment", None, "audience"), "The audience is a condition object"),
        ("factors", ("experiment", None, "factors"), "factors[0]: must be"),
    ],
)
def test_a_bad_configuration_is_refused_on_the_field_it_names(
    superuser_client, hero, case, where, message
):
    # Given another experiment in namespace "hero" (for the overlap case)
    make(hero, "other-test", namespace="hero", namespace_start=0.0, namespace_end=0.6)
    experiments_before = Experiment.objects.count()
    variants = [
        {"key": "control", "weight": "0.5", "content": ""},
        {"key": "sale", "weight": "0.5", "content": ""},
    ]
    goals: list[dict[str, Any]] = [{"event": "purchase", "primary": True}]
    fields: dict[str, Any] = {}
    if case == "weights":
        variants[1]["weight"] = "0.4"
    elif case == "one variant":
        variants = variants[:1]
        variants[0]["weight"] = "1"
    elif case == "bad key":
        variants[1]["key"] = "sa le"
    elif case == "unknown event":
        goals.append({"event": "signed_up"})
    elif case == "revenue property":
        goals = [{"event": "purchase", "kind": "revenue", "primary": True}]
    elif case == "bad where":
        goals[0]["where"] = '[{"property": "category", "op": "bigger", "value": 1}]'
    elif case == "two primaries":
        goals.append(
            {"event": "purchase", "kind": "revenue", "property": "revenue", "primary": True}
        )
    elif case == "window":
        goals[0]["window_seconds"] = "90"
    elif case == "no goal":
        goals = []
    elif case == "namespace":
        fields = {"namespace": "hero", "namespace_start": "0.5", "namespace_end": "1.0"}
    elif case == "namespace range":
        fields = {"namespace": "hero", "namespace_start": "0.8", "namespace_end": "0.7"}
    elif case == "audience":
        fields = {"audience": '{"all": [{"trait": "plan", "op": "after", "value": 1}]}'}
    elif case == "audience json":
        fields = {"audience": '{"all": ['}
    elif case == "audience list":
        fields = {"audience": "[1, 2]"}
    elif case == "factors":
        fields = {"factors": '[{"name": "color", "levels": ["red"]}]'}
        variants = []

    # When the marketer saves it
    response = superuser_client.post(
        reverse("admin:experiments_experiment_add"), add_form(hero, variants, goals, **fields)
    )

    # Then the form comes back (no 500), with the error on the field it names
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert message in page
    target, index, field = where
    if target == "experiment":
        errors = response.context["adminform"].form.errors
        assert any(message in e for e in errors[field]), errors
    else:
        row_errors, above = _inline_errors(response, target)
        if index is None:
            assert any(message in e for e in above), above
        else:
            assert any(message in e for e in row_errors[index][field]), row_errors
    # and nothing is stored or audited
    assert Experiment.objects.count() == experiments_before
    assert not Experiment.objects.filter(key="hero-test").exists()
    assert not AuditEvent.objects.filter(action="admin.experiments.experiment.added").exists()


def test_editing_a_running_experiment_changes_its_weights_but_keeps_its_variants(
    superuser_client, hero
):
    exp = make(hero, start=True)
    url = reverse("admin:experiments_experiment_change", args=[exp.pk])
    page = superuser_client.get(url).content.decode()
    data = form_fields(page)
    assert "key" not in data  # a started experiment's key seeds its hash: read-only
    rows = {data[f"variants-{i}-key"]: i for i in range(2)}

    # When the marketer moves weight to the treatment
    data[f"variants-{rows['control']}-weight"] = "0.4"
    data[f"variants-{rows['sale']}-weight"] = "0.6"
    response = superuser_client.post(url, data)

    # Then it is saved and audited
    assert response.status_code == 302, response.content.decode()
    assert list(exp.variants.values_list("key", "weight")) == [("control", 0.4), ("sale", 0.6)]
    entry = AuditEvent.objects.get(action="admin.experiments.experiment.changed")
    assert "variants" in entry.details["changed"][0]["changed"]["fields"]

    # But renaming a variant of a started experiment is refused on the form
    data[f"variants-{rows['sale']}-key"] = "bigger-sale"
    response = superuser_client.post(url, data)
    assert response.status_code == 200
    assert "a started experiment keeps its variants" in response.content.decode()
    assert list(exp.variants.values_list("key", flat=True)) == ["control", "sale"]


def test_a_running_experiment_cannot_be_deleted_until_it_is_stopped(superuser_client, hero, source):
    exp = make(hero, start=True)
    expose(exp, source, {"control": (3, 1), "sale": (3, 0)})
    url = reverse("admin:experiments_experiment_delete", args=[exp.pk])

    # the confirmation page lists what would go, as counts, and refuses while it runs
    page = html.unescape(superuser_client.get(url).content.decode())
    assert "Hero Test (hero-test) is running: stop it first" in page
    response = superuser_client.post(url, {"post": "yes"})
    assert response.status_code == 200
    assert Experiment.objects.filter(pk=exp.pk).exists()

    # once stopped, it goes with its exposures, and the deletion is audited
    services.experiment_transition(experiment=exp, move="stop", actor="test")
    page = html.unescape(superuser_client.get(url).content.decode())
    assert "Exposures: 6" in page
    response = superuser_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert not Experiment.objects.filter(pk=exp.pk).exists()
    assert not Exposure.objects.exists()
    assert AuditEvent.objects.filter(action="admin.experiments.experiment.deleted").exists()
    assert AuditEvent.objects.filter(action="experiment.deleted", actor="user:admin").exists()


# --- start, pause, stop -----------------------------------------------------------------


def move(client: Any, exp: Experiment, action: str) -> str:
    response = client.post(
        reverse("admin:experiments_experiment_transition", args=[exp.pk]),
        {"move": action},
        follow=True,
    )
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def test_start_pause_and_stop_move_the_status_and_an_illegal_move_says_why(superuser_client, hero):
    exp = make(hero)
    change = superuser_client.get(
        reverse("admin:experiments_experiment_change", args=[exp.pk])
    ).content.decode()
    assert 'value="start"' in change
    assert 'value="stop"' not in change

    page = move(superuser_client, exp, "start")
    exp.refresh_from_db()
    assert exp.status == Status.RUNNING
    assert exp.started_at is not None
    assert "Experiment hero-test is now running." in page
    assert 'value="pause"' in page
    assert 'value="stop"' in page

    move(superuser_client, exp, "pause")
    exp.refresh_from_db()
    assert exp.status == Status.PAUSED

    move(superuser_client, exp, "start")
    move(superuser_client, exp, "stop")
    exp.refresh_from_db()
    assert exp.status == Status.STOPPED
    assert exp.stopped_at is not None

    # an illegal move is a message, not an error page, and changes nothing
    page = move(superuser_client, exp, "start")
    assert "Experiment hero-test: status: cannot start an experiment that is stopped" in page
    exp.refresh_from_db()
    assert exp.status == Status.STOPPED
    actions = list(
        AuditEvent.objects.filter(object_id=str(exp.pk))
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert [a for a in actions if a.startswith("experiment.") and a != "experiment.created"] == [
        "experiment.start",
        "experiment.pause",
        "experiment.start",
        "experiment.stop",
    ]
    assert actions.count("admin.experiments.experiment.changed") == 4


def test_the_list_actions_move_several_experiments(superuser_client, hero):
    a, b = make(hero, "a-test"), make(hero, "b-test", start=True)
    response = superuser_client.post(
        reverse("admin:experiments_experiment_changelist"),
        {"action": "start_selected", "_selected_action": [a.pk, b.pk]},
        follow=True,
    )
    page = html.unescape(response.content.decode())
    assert "Start: a-test." in page
    assert "Experiment b-test: status: cannot start an experiment that is running" in page
    a.refresh_from_db()
    assert a.status == Status.RUNNING


# --- the results page --------------------------------------------------------------------


def test_the_results_page_shows_the_computed_figures_and_the_srm_warning(
    superuser_client, hero, source
):
    # Given a 50/50 experiment whose split came out 600/400
    exp = make(hero, goals=[CONVERSION, REVENUE], start=True)
    expose(exp, source, {"control": (600, 60), "sale": (400, 52)})

    # When the marketer opens its results (the first snapshot is computed then)
    response = superuser_client.get(results_url(exp))
    assert response.status_code == 200
    page = response.content.decode()
    payload = latest_payload(exp)

    # Then the sample ratio mismatch is the first thing said, in red
    warnings = re.findall(r'class="result-warning warning-(\w+)"[^>]*>(.*?)</p>', page, re.DOTALL)
    assert warnings[0][0] == "srm"
    assert "Sample ratio mismatch" in text_of(warnings[0][1])
    assert "control 600, sale 400" in text_of(warnings[0][1])
    # and each goal's table gives the figures results_compute gave, primary first
    conversion, revenue = goal_tables(page)
    control, sale = payload["goals"][0]["variants"]
    assert conversion["control"][:4] == [
        "control",
        "600",
        "60",
        f"{control['rate'] * 100:.2f}% [{control['ci'][0] * 100:.2f}%, {control['ci'][1] * 100:.2f}%]",
    ]
    vs = sale["vs_control"]
    lift = vs["relative_lift"]
    lo, hi = vs["relative_lift_ci"]
    assert conversion["sale"][:9] == [
        "sale",
        "400",
        "52",
        f"{sale['rate'] * 100:.2f}% [{sale['ci'][0] * 100:.2f}%, {sale['ci'][1] * 100:.2f}%]",
        f"{lift * 100:+.1f}% [{lo * 100:+.1f}%, {hi * 100:+.1f}%]",
        f"{vs['p_value']:.3f}",
        f"{vs['chance_to_beat_control'] * 100:.1f}%",
        f"{vs['expected_loss'] * 100:.2f} pp",
        f"{vs['sequential']['p_value']:.3f}",
    ]
    assert len(conversion["sale"]) == 9  # one treatment: no Holm column, no CUPED here
    r_sale = payload["goals"][1]["variants"][1]
    assert revenue["sale"][2] == charts.format_amount(r_sale["total"])
    assert revenue["sale"][3].startswith(charts.format_amount(r_sale["mean"]))
    # each figure says what it means
    assert 'title="Conversions ÷ users, with its 95% confidence interval (Wilson).' in page
    assert "Bayesian probability that this variant" in page
    assert reverse("admin:experiments_experiment_docs") in page
    # and both charts are drawn for each goal, naming every variant
    drawn = svgs(page)
    assert len(drawn) == 4
    for svg in drawn:
        assert 'data-variant="control"' in svg
        assert 'data-variant="sale"' in svg
    assert "Computed at" in page


def test_a_small_experiment_says_how_many_more_users_it_needs(superuser_client, hero, source):
    exp = make(hero, start=True)
    expose(exp, source, {"control": (20, 3), "sale": (20, 5)})

    page = superuser_client.get(results_url(exp)).content.decode()

    warnings = re.findall(r'class="result-warning warning-(\w+)"[^>]*>(.*?)</p>', page, re.DOTALL)
    assert [level for level, _ in warnings] == ["data"]
    needed = latest_payload(exp)["goals"][0]["sample_size"]["more_needed"]
    assert f"about {needed:,} more users are needed" in text_of(warnings[0][1])


def test_several_treatments_show_the_holm_adjusted_p_value_and_cuped(
    superuser_client, hero, source
):
    exp = make(
        hero,
        variants=[
            {"key": "control", "weight": 0.4},
            {"key": "sale", "weight": 0.3},
            {"key": "bold", "weight": 0.3},
        ],
        start=True,
    )
    expose(exp, source, {"control": (80, 10), "sale": (60, 12), "bold": (60, 4)}, before=5)

    page = superuser_client.get(results_url(exp)).content.decode()

    (table,) = goal_tables(page)
    payload = latest_payload(exp)
    headers = re.findall(r'<th scope="col" title="[^"]*">(.*?)</th>', page.split("goal-table")[1])
    assert "Holm-adjusted p" in headers
    assert "CUPED difference" in headers
    for row in payload["goals"][0]["variants"][1:]:
        cells = dict(zip(headers, table[row["key"]], strict=True))
        assert cells["Holm-adjusted p"] == charts.format_p(row["vs_control"]["p_value_adjusted"])
        cuped = row["vs_control"]["cuped"]
        assert cells["CUPED difference"].startswith(f"{cuped['difference'] * 100:+.2f} pp")
    assert "All variants together (chi-square" in page
    drawn = svgs(page)
    assert len(drawn) == 2
    for svg in drawn:
        for key in ("control", "sale", "bold"):
            assert f'data-variant="{key}"' in svg


def test_the_results_page_renders_without_exposures(superuser_client, hero):
    exp = make(hero, goals=[CONVERSION, REVENUE])

    response = superuser_client.get(results_url(exp))

    assert response.status_code == 200
    page = response.content.decode()
    assert ResultSnapshot.objects.filter(experiment=exp).count() == 1
    assert "Exposures (0 users)" in page
    assert page.count("No data yet") == 2  # each goal's series chart
    assert len(svgs(page)) == 4
    for svg in svgs(page):
        assert 'data-variant="control"' in svg
        assert 'data-variant="sale"' in svg


def test_the_results_page_renders_a_single_day_of_exposures(superuser_client, hero, source):
    exp = make(hero, goals=[CONVERSION, REVENUE], start=True)
    expose(exp, source, {"control": (5, 1), "sale": (5, 2)}, days_ago=(1,))

    page = superuser_client.get(results_url(exp)).content.decode()

    series = [s for s in svgs(page) if 'data-chart="series"' in s]
    assert len(series) == 2
    for svg in series:
        assert svg.count("<circle") == 2  # one point per variant, no line to draw
        assert "<polyline" not in svg


def test_the_results_page_survives_nulls_and_escapes_every_name(superuser_client, hero):
    # Given a stored snapshot whose figures are missing and whose names carry markup
    exp = make(hero)
    evil = '<script>alert("x")</script>'
    ResultSnapshot.objects.create(
        experiment=exp,
        computed_at=timezone.now(),
        payload={
            "control": evil,
            "confidence": None,
            "exposures": {evil: 3, "b": None},
            "srm": None,
            "warnings": [{"code": "not_enough_data", "message": f"Not enough data yet: {evil}"}],
            "goals": [
                {
                    "goal": {"event": evil, "kind": "revenue", "property": evil, "primary": True},
                    "variants": [
                        {"key": evil, "n": None, "mean": None, "ci": [None, None]},
                        {
                            "key": "b",
                            "n": 2,
                            "mean": 1.5,
                            "ci": None,
                            "vs_control": {"p_value": None},
                        },
                        {"key": "c"},
                    ],
                    "series": [
                        {"day": "2026-01-01", "variants": {evil: {"value": None}}},
                        {"day": "not a day"},
                        {"day": "2026-01-02", "variants": {"b": {"value": 1.0, "n": 2}}},
                        {"day": "2026-01-03", "variants": None},
                    ],
                }
            ],
        },
    )

    response = superuser_client.get(results_url(exp))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(" in page
    assert len(svgs(page)) == 2
    csv_response = superuser_client.get(
        reverse("admin:experiments_experiment_results_csv", args=[exp.pk])
    )
    assert csv_response.status_code == 200


def test_refresh_now_queues_a_recompute_and_says_so(
    superuser_client, hero, source, celery_eager, django_capture_on_commit_callbacks
):
    exp = make(hero, start=True)
    superuser_client.get(results_url(exp))
    assert ResultSnapshot.objects.filter(experiment=exp).count() == 1
    expose(exp, source, {"control": (4, 1), "sale": (4, 2)})

    with django_capture_on_commit_callbacks(execute=True):
        response = superuser_client.post(
            reverse("admin:experiments_experiment_results_refresh", args=[exp.pk]), follow=True
        )

    assert response.status_code == 200
    assert "Results refresh of hero-test queued on a worker" in response.content.decode()
    assert ResultSnapshot.objects.filter(experiment=exp).count() == 2
    assert latest_payload(exp)["exposures_total"] == 8


def test_the_csv_of_an_experiment_without_results_goes_to_the_results_page(superuser_client, hero):
    exp = make(hero)
    response = superuser_client.get(
        reverse("admin:experiments_experiment_results_csv", args=[exp.pk])
    )
    assert response.status_code == 302
    assert response["Location"] == results_url(exp)


def test_refresh_now_goes_to_the_queue(
    superuser_client, hero, celery_queued, django_capture_on_commit_callbacks
):
    exp = make(hero)
    with django_capture_on_commit_callbacks(execute=True):
        superuser_client.post(
            reverse("admin:experiments_experiment_results_refresh", args=[exp.pk])
        )
    assert celery_queued == ["experiments.tasks.experiment_results_refresh"]
    assert not ResultSnapshot.objects.filter(experiment=exp).exists()


def test_a_large_experiment_without_results_computes_them_on_a_worker(
    superuser_client, hero, source, celery_queued, django_capture_on_commit_callbacks, monkeypatch
):
    monkeypatch.setattr(experiments_tasks, "SYNC_RESULTS_LIMIT", 3)
    exp = make(hero, start=True)
    expose(exp, source, {"control": (2, 0), "sale": (2, 0)})

    with django_capture_on_commit_callbacks(execute=True):
        page = superuser_client.get(results_url(exp)).content.decode()

    assert "being computed on a worker" in page
    assert '<meta http-equiv="refresh"' in page
    assert celery_queued == ["experiments.tasks.experiment_results_refresh"]
    assert not ResultSnapshot.objects.filter(experiment=exp).exists()


# --- the CSV -----------------------------------------------------------------------------


def test_the_csv_has_one_row_per_goal_and_variant_with_the_exact_figures(
    superuser_client, hero, source
):
    exp = make(
        hero,
        variants=[
            {"key": "control", "weight": 0.4},
            {"key": "sale", "weight": 0.3},
            {"key": "bold", "weight": 0.3},
        ],
        goals=[REVENUE, CONVERSION],
        start=True,
    )
    expose(exp, source, {"control": (40, 10), "sale": (30, 12), "bold": (30, 4)})
    services.results_refresh(experiment=exp)

    response = superuser_client.get(
        reverse("admin:experiments_experiment_results_csv", args=[exp.pk])
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'attachment; filename="experiment-hero-test-results-' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0]) == charts.CSV_COLUMNS
    payload = latest_payload(exp)
    assert [(r["goal_kind"], r["variant"]) for r in rows] == [
        (kind, key) for kind in ("conversion", "revenue") for key in ("control", "sale", "bold")
    ]
    by = {(r["goal_kind"], r["variant"]): r for r in rows}
    for goal in payload["goals"]:
        for v in goal["variants"]:
            row = by[(goal["goal"]["kind"], v["key"])]
            assert int(row["users"]) == v["n"]
            assert row["is_control"] == ("true" if v["key"] == "control" else "false")
            value = "rate" if goal["goal"]["kind"] == "conversion" else "mean"
            assert float(row[value]) == v[value]
            assert [float(row["ci_low"]), float(row["ci_high"])] == v["ci"]
            vs = v.get("vs_control")
            if vs is None:
                assert row["p_value"] == row["relative_lift"] == ""
                continue
            assert float(row["p_value"]) == vs["p_value"]
            assert float(row["p_value_adjusted"]) == vs["p_value_adjusted"]
            assert float(row["relative_lift"]) == vs["relative_lift"]
            assert float(row["chance_to_beat_control"]) == vs["chance_to_beat_control"]
            assert float(row["expected_loss"]) == vs["expected_loss"]
            assert float(row["sequential_p_value"]) == vs["sequential"]["p_value"]
            assert row["significant"] in ("true", "false")
    assert by[("conversion", "sale")]["conversions"] == "12"
    assert by[("revenue", "sale")]["conversions"] == ""


# --- who may see it ----------------------------------------------------------------------


def test_a_user_who_is_not_staff_sees_none_of_it(user_client, hero):
    exp = make(hero)
    for url in (
        reverse("admin:experiments_experiment_changelist"),
        reverse("admin:experiments_experiment_change", args=[exp.pk]),
        results_url(exp),
        reverse("admin:experiments_experiment_results_csv", args=[exp.pk]),
        reverse("admin:experiments_experiment_docs"),
    ):
        response = user_client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login"))
    response = user_client.post(
        reverse("admin:experiments_experiment_transition", args=[exp.pk]), {"move": "start"}
    )
    assert response.status_code == 302
    exp.refresh_from_db()
    assert exp.status == Status.DRAFT
    assert not ResultSnapshot.objects.exists()


def test_staff_need_the_experiment_permissions(hero):
    exp = make(hero)
    user = get_user_model().objects.create_user("intern", password="pw-intern-123", is_staff=True)
    client = APIClient()
    client.force_login(user)

    # without any permission: nothing
    assert client.get(results_url(exp)).status_code == 403
    assert (
        client.get(reverse("admin:experiments_experiment_results_csv", args=[exp.pk])).status_code
        == 403
    )

    # allowed to view: the results, but not to start it
    user.user_permissions.add(Permission.objects.get(codename="view_experiment"))
    assert client.get(results_url(exp)).status_code == 200
    change = client.get(reverse("admin:experiments_experiment_change", args=[exp.pk]))
    assert change.status_code == 200
    assert 'name="move"' not in change.content.decode()
    response = client.post(
        reverse("admin:experiments_experiment_transition", args=[exp.pk]), {"move": "start"}
    )
    assert response.status_code == 403
    exp.refresh_from_db()
    assert exp.status == Status.DRAFT


def test_a_marketer_with_the_experiment_permissions_alone_can_set_one_up(hero):
    # Given a staff member allowed to add, change and view experiments (not variants or
    # goals: those are parts of an experiment)
    user = get_user_model().objects.create_user("mia", password="pw-mia-12345", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["add_experiment", "change_experiment", "view_experiment"]
        )
    )
    client = APIClient()
    client.force_login(user)

    # When she creates one through the form
    data = add_form(
        hero,
        [{"key": "control", "weight": "0.5"}, {"key": "sale", "weight": "0.5"}],
        [{"event": "purchase", "primary": True}],
    )
    response = client.post(reverse("admin:experiments_experiment_add"), data)

    # Then it is stored with its rows, and she can start it
    assert response.status_code == 302, response.content.decode()
    exp = Experiment.objects.get(key="hero-test")
    assert exp.variants.count() == 2
    assert exp.goals.count() == 1
    assert "Experiment hero-test is now running." in move(client, exp, "start")


# --- docs and the pure parts -------------------------------------------------------------


def test_the_docs_page_shows_the_explanations_escaped(superuser_client, tmp_path, monkeypatch):
    doc = tmp_path / "experiments.md"
    doc.write_text(
        "# Reading results\n\n## Chance to beat control\nIt is <b>a</b> probability.\n\n"
        "| number | in plain words |\n| --- | --- |\n| `p-value` | **how** surprising |\n\n"
        "1. A visitor keeps the variant,\n   *sticky*.\n2. Then the audience.\n"
    )
    monkeypatch.setattr(experiments_admin, "DOCS_FILE", doc)

    page = superuser_client.get(reverse("admin:experiments_experiment_docs")).content.decode()

    assert '<h3 id="chance-to-beat-control">Chance to beat control</h3>' in page
    assert "It is &lt;b&gt;a&lt;/b&gt; probability." in page
    assert "<tr><td><code>p-value</code></td><td><strong>how</strong> surprising</td></tr>" in page
    assert (
        "<ol><li>A visitor keeps the variant, <em>sticky</em>.</li><li>Then the audience.</li></ol>"
        in page
    )

    monkeypatch.setattr(experiments_admin, "DOCS_FILE", tmp_path / "missing.md")
    assert superuser_client.get(reverse("admin:experiments_experiment_docs")).status_code == 404


@pytest.mark.parametrize("days", [0, 1, 2, 30, 120])
def test_the_series_chart_draws_any_number_of_days(days):
    keys = ["control", "sale", "bold"]
    series: list[dict[str, Any]] = [
        {
            "day": f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}",
            "variants": {
                "control": {"n": d + 1, "value": 0.1 + d / 1000, "ci": [0.05, 0.2]},
                "sale": {"n": d + 1, "value": None if d % 5 == 3 else 0.12, "ci": None},
            },
        }
        for d in range(days)
    ]
    svg = charts.series_chart(series=series, keys=keys, kind="conversion", metric_label="Rate")
    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    for key in keys:
        assert f'data-variant="{key}"' in svg
    assert ("No data yet" in svg) == (days == 0)
    assert svg.count("<circle") == sum(
        1 for p in series for k in keys if (p["variants"].get(k) or {}).get("value") is not None
    )


def test_the_legend_of_many_long_variant_keys_wraps_inside_the_chart():
    keys = [f"a-rather-long-variant-key-{i}" for i in range(12)]
    svg = charts.series_chart(series=[], keys=keys, kind="revenue", metric_label="Mean")
    size = re.search(r'width="(\d+)" height="(\d+)"', svg)
    assert size is not None
    width, height = int(size.group(1)), int(size.group(2))
    for x, y, label in re.findall(
        r'<rect x="(\d+)" y="(\d+)"[^>]*/><text [^>]*>([^<]*)</text>', svg
    ):
        assert int(x) + 30 + 7 * len(label) <= width
        assert int(y) < height


def test_the_interval_chart_marks_the_control_and_skips_missing_figures():
    svg = charts.interval_chart(
        variants=[
            {"key": "control", "n": 100, "rate": 0.1, "ci": [0.05, 0.15]},
            {"key": "sale", "n": 0, "rate": None, "ci": None},
            {"key": "bold", "n": 50, "rate": float("nan"), "ci": [0.1, float("inf")]},
        ],
        kind="conversion",
        metric_label="Rate",
        confidence=0.95,
    )
    assert "control</text>" in svg  # its key says it is the control: no "(control)"
    assert 'stroke-dasharray="4 3"' in svg  # the control's value as the reference line
    assert svg.count("no data yet") == 2
    assert "nan" not in svg.lower()
    assert "inf" not in svg.lower()
    empty = charts.interval_chart(variants=[], kind="revenue", metric_label="Mean", confidence=0.9)
    assert "No variants" in empty


def test_csv_cells_are_unformatted_and_defused():
    payload = {
        "experiment": "=cmd",
        "goals": [
            {
                "goal": {"event": "@sum", "kind": "conversion", "primary": True},
                "variants": [{"key": "control", "n": 3, "rate": 1 / 3, "ci": [0.1, None]}],
            }
        ],
    }
    (row,) = charts.csv_rows(payload)
    cells = dict(zip(charts.CSV_COLUMNS, row, strict=True))
    assert cells["experiment"] == "'=cmd"
    assert cells["goal_event"] == "'@sum"
    assert cells["rate"] == repr(1 / 3)
    assert cells["users"] == "3"
    assert (cells["ci_low"], cells["ci_high"]) == ("0.1", "")


def test_variant_order_survives_jsonb():
    # the exposures dict comes back from PostgreSQL with its keys reordered
    payload = {"control": "control", "exposures": {"b": 1, "control": 2, "zz-old": 1}, "goals": []}
    assert charts.variant_keys(payload, ["control", "b"]) == ["control", "b", "zz-old"]
