"""`cluster_profiles`, `train_model`, `score_profiles`: progress on stderr, a summary on
stdout, clear errors for what cannot run."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from segments.models import Clustering, Predictor, ProfileScore
from tests.segments.ml.planted import planted_churn, planted_groups
from tests.segments.test_commands import Terminal

pytestmark = pytest.mark.django_db


def test_cluster_profiles_prints_the_clusters_and_shows_progress(source):
    planted_groups(source.source, per_group=30, now=timezone.now())
    Clustering.objects.create(key="behavior", name="Behavior", k_max=5)
    out, err = io.StringIO(), Terminal()
    call_command("cluster_profiles", stdout=out, stderr=err)
    text = out.getvalue()
    assert "behavior: k=3" in text
    assert "over 90 profiles" in text
    assert text.count("behavior-") == 3
    assert "30 profiles" in text
    assert "building features" in err.getvalue()
    assert "fitting k=" in err.getvalue()


def test_train_then_score_from_the_command_line(source):
    planted_churn(source.source, profiles=200, now=timezone.now(), horizon_days=30)
    Predictor.objects.create(key="churn", name="Churn", horizon_days=30)
    out = io.StringIO()
    call_command("train_model", "churn", "--no-score", stdout=out, stderr=Terminal())
    assert "churn v1: held-out AUC" in out.getvalue()
    assert "first version" in out.getvalue()
    assert not ProfileScore.objects.exists()
    out = io.StringIO()
    call_command("score_profiles", stdout=out, stderr=Terminal())
    assert out.getvalue().strip() == "churn: scored 200 profiles"
    assert ProfileScore.objects.filter(model="churn").count() == 200


def test_unknown_names_and_untrained_models_are_refused(source):
    with pytest.raises(CommandError, match="no active clustering"):
        call_command("cluster_profiles", "nope")
    with pytest.raises(CommandError, match="no active predictor"):
        call_command("train_model", "nope")
    Predictor.objects.create(key="churn", name="Churn")
    with pytest.raises(CommandError, match="no trained version yet"):
        call_command("score_profiles", "churn")
    Clustering.objects.create(key="behavior", name="Behavior")
    with pytest.raises(CommandError, match="at least 20"):
        call_command("cluster_profiles", "behavior", stderr=io.StringIO())
