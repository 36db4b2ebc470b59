"""The admin's own scripts run under the strict Content-Security-Policy: its confirmation
dialogs (which used to be inline onclick handlers) still ask before a final step. The
`page` fixture fails the test on any policy violation."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from experiments.models import Experiment
from experiments.services import experiment_save, experiment_transition
from rules import services as rules_services
from rules.models import Slot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def running_experiment(cdp_purposes: None) -> Experiment:
    get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-boss-123")
    slot = rules_services.slot_save(
        slot=Slot(key="csp_slot"),
        actor="test",
        variants=[{"key": "base"}, {"key": "promo", "title": "Promo"}],
        default_variant="base",
    )
    experiment = experiment_save(
        experiment=Experiment(key="csp-test", name="CSP test", slot=slot),
        actor="test",
        variants=[{"key": "base", "weight": 0.5}, {"key": "promo", "weight": 0.5}],
        goals=[{"event": "purchase", "kind": "conversion"}],
    )
    return experiment_transition(experiment=experiment, move="start", actor="test")


def _open_change_page(page: Any, live_server: Any, experiment: Experiment) -> None:
    path = f"/admin/experiments/experiment/{experiment.pk}/change/"
    page.goto(f"{live_server.url}/admin/login/?next={path}")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "pw-boss-123")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")


def test_stopping_an_experiment_asks_first(page, live_server, running_experiment):
    # Given a marketer on a running experiment's page
    _open_change_page(page, live_server, running_experiment)
    questions: list[str] = []

    # When they press Stop and decline the question
    def decline(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", decline)
    page.click("button.move-stop")
    page.wait_for_timeout(300)

    # Then they were asked, and the experiment still runs
    assert len(questions) == 1
    assert "Stop this experiment for good" in questions[0]
    running_experiment.refresh_from_db()
    assert running_experiment.status == "running"

    # When they press Stop again and confirm
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        page.click("button.move-stop")

    # Then it is stopped
    running_experiment.refresh_from_db()
    assert running_experiment.status == "stopped"
