"""Behavioral features: computed from raw events as of a moment, nothing after it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from profiles.models import Event, Profile
from segments.ml.features import FeatureSpec, features_matrix, top_categories
from tests.segments.ml.planted import _event, planted_churn

pytestmark = pytest.mark.django_db


def _row(data, pid) -> dict[str, float]:
    i = data.ids.index(pid)
    return dict(zip(data.names, data.X[i].tolist(), strict=True))


def test_features_of_one_profile_are_what_its_events_say(source):
    # given: two sessions (a gap over 30 minutes between them) ten days before as_of
    now = timezone.now().replace(microsecond=0)
    src, p = source.source, Profile.objects.create()
    t = now - timedelta(days=10)
    rows = [
        _event(src, p, t, "page"),
        _event(src, p, t + timedelta(seconds=60), "track", "product_viewed", category="shoes"),
        _event(src, p, t + timedelta(seconds=90), "track", "scroll_depth", percent=50),
        _event(src, p, t + timedelta(seconds=120), "track", "add_to_cart", category="shoes"),
        _event(src, p, t + timedelta(seconds=180), "track", "purchase", revenue="40.5"),
        # second session, the next day
        _event(src, p, t + timedelta(days=1), "page"),
        _event(src, p, t + timedelta(days=1, seconds=30), "track", "scroll_depth", percent=100),
        _event(src, p, t + timedelta(days=1, seconds=40), "track", "purchase", revenue=9.5),
        _event(
            src, p, t + timedelta(days=1, seconds=50), "track", "product_viewed", category="bags"
        ),
    ]
    bot = _event(src, p, t + timedelta(days=2), "track", "purchase", revenue=1000)
    bot.is_bot = True
    Event.objects.bulk_create([*rows, bot])
    # when
    data = features_matrix(FeatureSpec(as_of=now, categories=("shoes", "bags")))
    f = _row(data, p.pk)
    # then
    assert f["recency_days"] == pytest.approx(9 - 50 / 86400, abs=1e-4)
    assert f["tenure_days"] == pytest.approx(10, abs=1e-4)
    assert f["events"] == 9  # the bot's purchase is not counted
    assert f["sessions"] == 2
    assert f["purchases"] == 2
    assert f["revenue"] == pytest.approx(50.0)  # "40.5" as text counts like 9.5
    assert f["avg_session_minutes"] == pytest.approx((180 + 50) / 60 / 2)
    assert f["page_depth"] == 1.0
    assert f["dwell_seconds"] == pytest.approx((60 + 30) / 2)  # page → next event
    assert f["scroll_depth"] == 75.0
    assert f["cart_adds"] == 1
    assert f["days_active"] == 2
    assert f["affinity:shoes"] == pytest.approx(2 / 3)
    assert f["affinity:bags"] == pytest.approx(1 / 3)


def test_nothing_after_as_of_or_before_the_lookback_changes_the_features(source):
    # given: features of a population as of a cutoff
    now = timezone.now()
    planted_churn(source.source, profiles=40, now=now, horizon_days=30)
    cutoff = now - timedelta(days=30)
    spec = FeatureSpec(as_of=cutoff, lookback_days=90, categories=("shoes", "bags"))
    before = features_matrix(spec)
    # when: more events arrive after the cutoff, and some long before the window
    src = source.source
    extra = []
    for pid in before.ids[:10]:
        p = Profile(pk=pid)
        extra.append(_event(src, p, cutoff + timedelta(seconds=1), "track", "purchase", revenue=5))
        extra.append(_event(src, p, cutoff - timedelta(days=200), "page"))
    Event.objects.bulk_create(extra)
    after = features_matrix(spec)
    # then: identical, row for row
    assert after.ids == before.ids
    assert (after.X == before.X).all()


def test_chunked_features_equal_one_pass_and_skip_profiles_without_events(source):
    now = timezone.now()
    planted_churn(source.source, profiles=25, now=now, horizon_days=10)
    Profile.objects.create()  # no events at all
    spec = FeatureSpec(as_of=now, categories=top_categories(as_of=now))
    from segments.ml.features import feature_chunks

    parts = list(feature_chunks(spec, chunk=7))
    whole = features_matrix(spec)
    assert [pid for part in parts for pid in part.ids] == whole.ids
    assert len(whole.ids) == 25
    assert set(top_categories(as_of=now)) == {"shoes", "bags"}
