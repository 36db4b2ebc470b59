"""The README's tour in a browser: the seeded demo (a small `seed_demo`) as a newcomer
meets it — a shop with recommendations trained on the shoppers, and an admin whose
segments and experiment results have something real to show. Its named screenshots are
the README's (`CDP_SCREENSHOT_DIR=docs/screenshots`)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command

from experiments.models import Experiment
from recommendations.models import Item

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def seeded(cdp_purposes: None) -> str:
    out = io.StringIO()
    call_command("seed_demo", "--shoppers", "120", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _login(page: Any, live_server: Any, next_path: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin")
    page.click("input[type=submit]")
    page.wait_for_url(f"**{next_path}")


def test_the_seeded_demo_shows_recommendations_segments_and_results(
    page: Any, live_server: Any, shots: Any, seeded: str
) -> None:
    # Given the demo seeded as `python3 dev.py run` does (120 shoppers instead of 2,000)
    assert "segment cart-abandoners:" in seeded

    # When a new visitor accepts consent on the shop's home page
    page.goto(live_server.url + "/demo/")
    page.click("#consent-accept")

    # Then "Picked for you" shows products of the catalog, each with a link and a reason
    cards = page.locator("[data-cdp-slot=home_recommendations] article.card")
    cards.first.wait_for()
    assert cards.count() >= 4
    titles = {t.strip() for t in cards.locator("h3").all_text_contents()}
    assert titles <= set(Item.objects.values_list("title", flat=True))
    first_link = cards.first.locator("a").get_attribute("href") or ""
    assert first_link.startswith("/demo/p/")
    assert all(r.strip() for r in cards.locator(".reason").all_text_contents())
    shots(page, "home-with-recommendations", name="storefront-home", full_page=True)

    # When the marketer opens the segments in the admin (on a wider screen)
    page.set_viewport_size({"width": 1600, "height": 1000})
    _login(page, live_server, "/admin/segments/segment/")

    # Then the demo's segments are listed with members
    listing = page.text_content("#result_list") or ""
    for name in ("Cart Abandoners", "Deal Seekers", "Loyal Customers"):
        assert name in listing
    shots(page, "segments", name="admin-segments")

    # And the A/B test's results page draws its intervals and cumulative charts
    experiment = Experiment.objects.get(key="promo-strip-copy")
    page.goto(f"{live_server.url}/admin/experiments/experiment/{experiment.pk}/results/")
    page.wait_for_selector("figure svg")
    assert page.locator("figure svg").count() >= 2
    body = page.text_content("#content") or ""
    assert "Chance to beat control" in body or "chance to beat control" in body.lower()
    shots(page, "experiment-results", name="admin-experiment-results")
