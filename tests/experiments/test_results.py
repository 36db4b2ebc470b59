"""Experiment results end to end: visitors assigned through `/decide`, events through
`/events`, results computed from exposures and events — checked against a hand
calculation on the same raw data (not against experiments.stats)."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from scipy import stats as sps

from experiments import services
from experiments.models import Experiment, Exposure, Status
from experiments.selectors import experiments_to_refresh, results_latest
from rules import decisionlog
from rules.models import Slot
from tests.conftest import post_events

BOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


def start(slot: Slot, **fields: Any) -> Experiment:
    exp = services.experiment_save(
        experiment=Experiment(key="hero-test", name="Hero test", slot=slot, **fields),
        actor="test",
        variants=fields.pop(
            "variants",
            [
                {"key": "welcome", "weight": 0.5},
                {"key": "sale", "weight": 0.5, "content": {"title": "Big sale"}},
            ],
        ),
        goals=[
            {"event": "purchase", "kind": "conversion", "window_seconds": 86400, "primary": True},
            {
                "event": "purchase",
                "kind": "revenue",
                "property": "revenue",
                "window_seconds": 86400,
            },
            {
                "event": "purchase",
                "kind": "conversion",
                "where": [{"property": "category", "op": "eq", "value": "shoes"}],
                "window_seconds": 86400,
            },
        ],
    )
    return services.experiment_transition(experiment=exp, move="start", actor="test")


def visit(write_client: Any, anon: str) -> str:
    assert (
        post_events(
            write_client, {"type": "page", "name": "Home", "anonymous_id": anon}
        ).status_code
        == 202
    )
    response = write_client.post(
        "/api/v1/decide", {"anonymous_id": anon, "slots": ["home_hero"]}, format="json"
    )
    assert response.status_code == 200, response.content
    decision = response.json()["decisions"]["home_hero"]
    assert decision["source"] == "experiment"
    return decision["experiment"]["variant"]


def purchase(write_client: Any, anon: str, at: Any, revenue: float, **extra: Any) -> None:
    body = {
        "type": "track",
        "event": "purchase",
        "anonymous_id": anon,
        "timestamp": at.isoformat(),
        "properties": {"revenue": revenue, "category": extra.pop("category", "shirts")},
        **extra,
    }
    response = post_events(write_client, body)
    assert response.status_code == 202, response.content


def z_test_by_hand(c1: int, n1: int, c2: int, n2: int) -> tuple[float, float]:
    p1, p2 = c1 / n1, c2 / n2
    pooled = (c1 + c2) / (n1 + n2)
    z = (p2 - p1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return z, math.erfc(abs(z) / math.sqrt(2))


@pytest.mark.django_db
def test_results_match_a_hand_calculation(write_client, hero):
    # given: 60 visitors assigned through /decide, exposed two days ago
    exp = start(hero)
    visitors = {f"v-{i}": visit(write_client, f"v-{i}") for i in range(60)}
    decisionlog.flush()
    assert Exposure.objects.filter(experiment=exp).count() == 60
    now = timezone.now()
    exposed_at = now - timedelta(days=2)
    Exposure.objects.filter(experiment=exp).update(exposed_at=exposed_at)
    # and their purchases: inside the day after exposure (counted), before it (CUPED's
    # covariate only), more than a day after (not counted), and by a bot (not counted)
    post: dict[str, float] = {}
    shoes: set[str] = set()
    pre: dict[str, float] = {}
    for i, anon in enumerate(visitors):
        if i % 3 == 0 or (visitors[anon] == "sale" and i % 4 == 0):
            amount = 10.0 + i
            category = "shoes" if i % 2 == 0 else "shirts"
            purchase(write_client, anon, exposed_at + timedelta(hours=2), amount, category=category)
            post[anon] = post.get(anon, 0.0) + amount
            if category == "shoes":
                shoes.add(anon)
        if i % 6 == 0:  # a second purchase in the window adds revenue, not a conversion
            purchase(write_client, anon, exposed_at + timedelta(hours=20), 5.0)
            post[anon] = post.get(anon, 0.0) + 5.0
        if i % 5 == 0:
            purchase(write_client, anon, exposed_at - timedelta(hours=3), 7.0 + i)
            pre[anon] = 7.0 + i
        if i % 7 == 1:
            purchase(write_client, anon, exposed_at + timedelta(hours=30), 99.0)
    not_a_buyer = next(a for a in visitors if a not in post)
    purchase(
        write_client,
        not_a_buyer,
        exposed_at + timedelta(hours=1),
        50.0,
        context={"user_agent": BOT_UA},
    )

    # when
    services.results_refresh(experiment=exp, now=now)
    latest = results_latest(experiment=exp)
    assert latest is not None
    results = latest.payload

    # then: per-variant figures
    units = {v: [a for a in visitors if visitors[a] == v] for v in ("welcome", "sale")}
    primary, revenue, filtered = results["goals"]
    assert results["control"] == "welcome"
    assert results["exposures"] == {v: len(units[v]) for v in units}
    by_key = {row["key"]: row for row in primary["variants"]}
    for v, members in units.items():
        assert by_key[v]["n"] == len(members)
        assert by_key[v]["conversions"] == sum(1 for a in members if a in post)
        assert by_key[v]["rate"] == pytest.approx(by_key[v]["conversions"] / len(members))
    # the z-test, by hand
    c1, n1 = by_key["welcome"]["conversions"], by_key["welcome"]["n"]
    c2, n2 = by_key["sale"]["conversions"], by_key["sale"]["n"]
    z, p = z_test_by_hand(c1, n1, c2, n2)
    vs = by_key["sale"]["vs_control"]
    assert vs["test"]["z"] == pytest.approx(z, rel=1e-9)
    assert vs["p_value"] == pytest.approx(p, rel=1e-9)
    assert vs["difference"] == pytest.approx(c2 / n2 - c1 / n1, rel=1e-12)
    assert vs["relative_lift"] == pytest.approx((c2 / n2) / (c1 / n1) - 1, rel=1e-12)
    # one treatment: Holm changes nothing
    assert vs["p_value_adjusted"] == pytest.approx(p, rel=1e-12)
    assert 0.0 < vs["chance_to_beat_control"] < 1.0

    # revenue: Welch's test on the per-unit sums, by scipy on the raw values
    values = {v: [post.get(a, 0.0) for a in members] for v, members in units.items()}
    rev = {row["key"]: row for row in revenue["variants"]}
    for v in units:
        assert rev[v]["total"] == pytest.approx(sum(values[v]))
        assert rev[v]["mean"] == pytest.approx(sum(values[v]) / len(values[v]))
    welch = sps.ttest_ind(values["sale"], values["welcome"], equal_var=False)
    assert rev["sale"]["vs_control"]["test"]["t"] == pytest.approx(welch.statistic, rel=1e-9)
    assert rev["sale"]["vs_control"]["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    # CUPED uses the pre-exposure revenue: theta = cov(x, y) / var(x) over all units
    xs = [pre.get(a, 0.0) for a in visitors]
    ys = [post.get(a, 0.0) for a in visitors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (len(xs) - 1)
    var = sum((x - mx) ** 2 for x in xs) / (len(xs) - 1)
    assert rev["sale"]["vs_control"]["cuped"]["theta"] == pytest.approx(cov / var, rel=1e-9)

    # a property filter narrows the goal
    f = {row["key"]: row for row in filtered["variants"]}
    for v, members in units.items():
        assert f[v]["conversions"] == sum(1 for a in members if a in shoes)

    # the cumulative series ends at the totals
    last = primary["series"][-1]["variants"]
    for v in units:
        assert last[v]["n"] == len(units[v])
        assert last[v]["value"] == pytest.approx(by_key[v]["rate"])


@pytest.mark.django_db
def test_a_skewed_split_is_flagged_as_sample_ratio_mismatch(hero):
    # given: 1,000 exposures where the weights say 50/50 but 600 went to one side
    exp = start(hero)
    now = timezone.now()
    import uuid

    Exposure.objects.bulk_create(
        Exposure(
            experiment=exp,
            profile_id=uuid.uuid4(),
            variant="welcome" if i < 600 else "sale",
            exposed_at=now,
        )
        for i in range(1000)
    )
    # when
    payload = services.results_refresh(experiment=exp, now=now).payload
    # then: chi-square 40 on 1 dof, p ≈ 2.5e-10
    assert payload["srm"]["mismatch"] is True
    assert payload["srm"]["statistic"] == pytest.approx(40.0)
    assert payload["srm"]["p_value"] == pytest.approx(sps.chi2.sf(40.0, 1))
    assert [w["code"] for w in payload["warnings"]][:1] == ["sample_ratio_mismatch"]
    assert "Sample ratio mismatch" in payload["warnings"][0]["message"]


@pytest.mark.django_db
def test_a_small_experiment_says_how_many_more_users_it_needs(write_client, hero):
    # given: 20 visitors, a quarter of the control converts
    exp = start(hero)
    visitors = {f"s-{i}": visit(write_client, f"s-{i}") for i in range(20)}
    decisionlog.flush()
    for i, anon in enumerate(visitors):
        if i % 4 == 0:
            purchase(write_client, anon, timezone.now(), 20.0)
    # when
    payload = services.results_refresh(experiment=exp).payload
    # then
    needed = payload["goals"][0]["sample_size"]
    assert needed["enough"] is False
    assert needed["more_needed"] > 0
    assert any(
        w["code"] == "not_enough_data" and f"{needed['more_needed']:,}" in w["message"]
        for w in payload["warnings"]
    )


@pytest.mark.django_db
def test_results_are_refreshed_for_live_and_recently_stopped_experiments(hero):
    exp = start(hero)
    now = timezone.now()
    assert experiments_to_refresh(now=now, stopped_within=timedelta(days=1)) == [exp.pk]
    services.experiment_transition(experiment=exp, move="stop", actor="test")
    assert experiments_to_refresh(now=now, stopped_within=timedelta(days=1)) == [exp.pk]
    Experiment.objects.filter(pk=exp.pk).update(
        status=Status.STOPPED, stopped_at=now - timedelta(days=3)
    )
    assert experiments_to_refresh(now=now, stopped_within=timedelta(days=1)) == []
    # … unless a goal's window is still open: conversions may still land
    exp.goals.update(window_seconds=5 * 86400)
    assert experiments_to_refresh(now=now, stopped_within=timedelta(days=1)) == [exp.pk]


def _exposed(exp: Experiment, variant: str, buys: bool, at: Any) -> None:
    import uuid

    from profiles.models import Event, Profile, Source

    source = Source.objects.first() or Source.objects.create(
        name="s", slug="s", write_key_hash="w", secret_key_hash="k"
    )
    profile = Profile.objects.create()
    Exposure.objects.create(experiment=exp, profile_id=profile.pk, variant=variant, exposed_at=at)
    if buys:
        Event.objects.create(
            source=source,
            message_id=str(uuid.uuid4()),
            profile=profile,
            type="track",
            event="purchase",
            timestamp=at + timedelta(minutes=5),
            received_at=at,
            properties={"revenue": 10},
        )


@pytest.mark.django_db
def test_when_every_control_user_converts_the_warning_says_so(hero):
    # given: 10 exposures, every one of them buys
    exp = start(hero)
    now = timezone.now()
    for i in range(10):
        _exposed(exp, "welcome" if i < 5 else "sale", True, now - timedelta(hours=2))
    # when
    payload = services.results_refresh(experiment=exp, now=now).payload
    # then
    rows = {r["key"]: r for r in payload["goals"][0]["variants"]}
    assert rows["welcome"]["rate"] == 1.0
    assert payload["goals"][0]["sample_size"] is None
    messages = [w["message"] for w in payload["warnings"] if w["code"] == "not_enough_data"]
    assert messages == [
        "Not enough data yet: every control user did purchase: there is no room to detect a lift."
    ]


@pytest.mark.django_db
def test_the_sequential_test_never_takes_back_what_an_earlier_look_showed(hero):
    # given: a first look where the sale variant is far ahead (a mixture scaled for
    # large effects: with the default 5% the first look would not be significant yet)
    exp = start(hero, minimum_detectable_effect=1.0)
    now = timezone.now()
    for i in range(200):
        _exposed(exp, "welcome", i < 20, now - timedelta(hours=3))
        _exposed(exp, "sale", i < 60, now - timedelta(hours=3))
    first = services.results_refresh(experiment=exp, now=now).payload
    seq1 = first["goals"][0]["variants"][1]["vs_control"]["sequential"]
    # when: later visitors convert alike in both variants (the lift shrinks)
    for i in range(400):
        _exposed(exp, "welcome", i < 40, now - timedelta(hours=2))
        _exposed(exp, "sale", i < 40, now - timedelta(hours=2))
    second = services.results_refresh(experiment=exp, now=now + timedelta(minutes=10)).payload
    seq2 = second["goals"][0]["variants"][1]["vs_control"]["sequential"]
    # then: the p-value never rises, the interval only narrows, the mixture scale is kept
    assert seq1["p_value"] < 0.05
    assert seq2["p_value"] == seq1["p_value"]
    assert seq2["tau_squared"] == seq1["tau_squared"]
    low1, high1 = seq1["difference_ci"]
    low2, high2 = seq2["difference_ci"]
    assert low1 <= low2 <= high2 <= high1
    # while the fixed-horizon p-value follows the data
    fixed = second["goals"][0]["variants"][1]["vs_control"]["p_value"]
    assert fixed > first["goals"][0]["variants"][1]["vs_control"]["p_value"]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _figures(payload: dict[str, Any]) -> list[Any]:
    """Every per-variant figure but the sequential ones (those carry over between looks)."""
    out = []
    for g in payload["goals"]:
        for r in g["variants"]:
            vs = dict(r.get("vs_control") or {})
            vs.pop("sequential", None)
            out.append(_rounded({**r, "vs_control": vs, "goal": g["goal"]["event"]}))
    return out


@pytest.mark.django_db
def test_kept_days_give_the_same_results_as_a_full_recompute(hero):
    # given: exposures over 20 days (most long past their 1-day goal windows),
    # purchases before and after each exposure
    from experiments.models import DaySums

    exp = start(hero)
    now = timezone.now()
    for day in range(20):
        for i in range(6):
            _exposed(exp, "welcome" if i % 2 else "sale", i % 3 == 0, now - timedelta(days=day))
    first = services.results_refresh(experiment=exp, now=now).payload
    kept = set(DaySums.objects.values_list("day", flat=True))
    # then: the closed days are kept …
    assert kept
    assert max(kept) < (now - timedelta(days=2)).date()  # 1-day windows, 1 day of grace
    # when: more events land on an open day, and a kept day's exposures change
    for _ in range(3):
        _exposed(exp, "welcome", True, now - timedelta(hours=1))
    gone = Exposure.objects.filter(experiment=exp, exposed_at__date=max(kept)).first()
    assert gone is not None
    gone.delete()
    again = services.results_refresh(experiment=exp, now=now).payload
    full = services.results_refresh(experiment=exp, now=now, full=True).payload
    # then: reading the kept days back gives exactly what the full recompute gives
    assert _figures(again) == _figures(full)
    assert _figures(again) != _figures(first)
    assert again["exposures_total"] == 20 * 6 + 3 - 1


@pytest.mark.django_db
def test_changing_the_goals_forgets_the_kept_days(hero):
    from experiments.models import DaySums

    exp = start(hero)
    now = timezone.now()
    for day in range(12):
        _exposed(exp, "sale", True, now - timedelta(days=day))
    services.results_refresh(experiment=exp, now=now)
    assert DaySums.objects.exists()
    services.experiment_save(
        experiment=exp,
        actor="t",
        goals=[{"event": "purchase", "kind": "conversion", "window_seconds": 3600}],
    )
    assert not DaySums.objects.exists()
