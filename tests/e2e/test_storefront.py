"""The demo storefront end to end, in headless Chromium against the live server: what a
shopper does, what the CDP stores and what the shop shows back; a marketer's rule made
in the admin and served on the shop. Screenshots go to each test's temporary folder (and
to $CDP_SCREENSHOT_DIR for the README tour)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.contrib.auth import get_user_model

from cdp.celery import app
from profiles.models import Event, Identity, Profile
from recommendations.demo import demo_recommendations_ensure
from rules.demo import demo_rules_ensure
from rules.models import Rule, Slot
from segments.demo import demo_segments_ensure
from segments.models import Membership
from storefront.catalog import CATEGORIES, products_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HERO = "[data-cdp-slot=home_hero] [data-cdp-field=title]"


@pytest.fixture
def demo_shop(cdp_purposes: None) -> None:
    """The demo's segments, slots and rules (no events), with the hero's 10 % control
    group off so that what a visitor sees does not depend on their random id."""
    demo_segments_ensure()
    demo_rules_ensure()
    demo_recommendations_ensure()  # the two recommendation slots; nothing to train on yet
    Slot.objects.filter(key="home_hero").update(control_percent=0)


@pytest.fixture
def tasks() -> Iterator[None]:
    """Real-time segment updates run on a real Celery worker when a broker is configured
    (CI: Redis); the embedded default runs them eagerly, in the request."""
    if app.conf.task_always_eager:
        yield
        return
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        yield


def _profile_of(anonymous_id: str) -> Profile | None:
    found = Identity.objects.filter(kind="anonymous_id", value=anonymous_id).first()
    if found is None:
        return None
    profile = found.profile
    while profile.merged_into_id is not None:
        profile = Profile.objects.get(pk=profile.merged_into_id)
    return profile


def _names(anonymous_id: str) -> set[str]:
    profile = _profile_of(anonymous_id)
    if profile is None:
        return set()
    return {e.event or e.type for e in Event.objects.filter(profile=profile)}


def test_a_shopper_who_leaves_a_full_cart_is_reminded_on_return(
    page: Any,
    live_server: Any,
    shots: Any,
    eventually: Callable[..., Any],
    demo_shop: None,
    tasks: None,
) -> None:
    shop = live_server.url + "/demo/"
    page.goto(shop)
    page.wait_for_selector("#consent-banner:not([hidden])")
    shots(page, "consent-banner", name="storefront-consent")
    page.click("#consent-accept")
    page.wait_for_selector("[data-cdp-slot=home_hero][data-cdp-source]")
    assert page.text_content(HERO) == "New season, new favourites"
    shots(page, "home-first-visit")

    category = CATEGORIES[0]
    page.click(f".cats >> text={category.name}")
    page.wait_for_url(f"**/demo/c/{category.slug}/")
    first = products_in(category.slug)[0]
    page.click(f"a[href='/demo/p/{first.id}/'] >> nth=0")
    page.wait_for_url(f"**/demo/p/{first.id}/")
    shots(page, "product", name="storefront-product")
    page.click("#add-to-cart")
    page.wait_for_url("**/demo/cart/")
    assert page.text_content("[data-testid=cart-count]") == "1"
    shots(page, "cart")
    anonymous_id = page.evaluate("cdp.anonymousId()")

    page.goto("about:blank")  # the shopper leaves; the SDK's last batch goes by beacon
    names = eventually(
        page,
        lambda: (lambda n: n if {"product_viewed", "add_to_cart"} <= n else None)(
            _names(anonymous_id)
        ),
    )
    assert "page" in names
    stored = Event.objects.get(event="add_to_cart", anonymous_id=anonymous_id)
    assert stored.properties["product_id"] == first.id
    assert stored.context["page"]["path"] == f"/demo/p/{first.id}/"
    eventually(
        page,
        lambda: Membership.objects.filter(
            segment__slug="cart-abandoners", profile=_profile_of(anonymous_id)
        ).exists(),
        timeout=20,
    )

    page.goto(shop)  # back the next day (well, now): the hero remembers the cart
    page.wait_for_selector("[data-cdp-slot=home_hero][data-cdp-variant=cart-reminder]")
    assert page.text_content(HERO) == "You left something behind"
    assert page.get_attribute("[data-cdp-slot=home_hero] a.btn", "href") == "/demo/cart/"
    page.click("#why-toggle")
    why = page.text_content("[data-why-slot=home_hero]") or ""
    assert "cart-reminder" in why
    assert "add_to_cart" in why
    shots(page, "home-return-cart-reminder", name="storefront-cart-reminder")


def test_a_visitor_who_declines_consent_is_not_tracked_and_sees_defaults(
    page: Any, live_server: Any, shots: Any, demo_shop: None
) -> None:
    calls: list[str] = []
    page.on(
        "request",
        lambda r: calls.append(r.url) if ("/v1/" in r.url or "/api/v1/" in r.url) else None,
    )
    page.goto(live_server.url + "/demo/")
    page.click("#consent-decline")
    product = products_in(CATEGORIES[1].slug)[0]
    page.goto(live_server.url + f"/demo/p/{product.id}/")
    page.click("#add-to-cart")
    page.wait_for_url("**/demo/cart/")
    page.goto(live_server.url + "/demo/")
    assert page.text_content(HERO) == "New season, new favourites"
    assert page.get_attribute("[data-cdp-slot=home_hero]", "data-cdp-source") is None
    page.click("#why-toggle")
    assert "declined" in (page.text_content("#why") or "")
    shots(page, "declined-defaults")
    page.goto("about:blank")
    page.wait_for_timeout(300)

    assert calls == []
    assert Event.objects.count() == 0
    assert Profile.objects.count() == 0


def test_a_rule_made_in_the_admin_is_served_on_the_shop(
    browser: Any, page: Any, live_server: Any, shots: Any, demo_shop: None
) -> None:
    get_user_model().objects.create_superuser("marketer", "m@example.com", "pw-marketer-9")
    page.goto(live_server.url + "/admin/login/?next=/admin/rules/rule/add/")
    page.fill("#id_username", "marketer")
    page.fill("#id_password", "pw-marketer-9")
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/rules/rule/add/")
    # The key first: once edited, the admin's prepopulate script leaves it alone.
    page.fill("#id_key", "flash-sale-everyone")
    page.fill("#id_name", "Flash sale for everyone on the demo shop")
    page.select_option("#id_slot", label="home_hero")
    page.fill("#id_condition", '{"context": "page", "op": "startswith", "value": "/demo"}')
    flash = page.locator("#id_variant option", has_text="flash-sale").first.get_attribute("value")
    page.select_option("#id_variant", value=flash)
    page.fill("#id_priority", "500")
    shots(page, "admin-rule-form", name="admin-rule-add", full_page=True)
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    shots(page, "admin-rule-saved")
    assert Rule.objects.get(key="flash-sale-everyone").slot.key == "home_hero"

    shopper = browser.new_context(
        viewport={"width": 1280, "height": 800}, user_agent=page.evaluate("navigator.userAgent")
    )
    try:
        tab = shopper.new_page()
        tab.goto(live_server.url + "/demo/")
        tab.click("#consent-accept")
        tab.wait_for_selector("[data-cdp-slot=home_hero][data-cdp-variant=flash-sale]")
        assert tab.text_content(HERO) == "Flash sale: 30% off for 24 hours"
        tab.click("#why-toggle")
        assert "flash-sale-everyone" in (tab.text_content("[data-why-slot=home_hero]") or "")
        shots(tab, "shop-serves-the-rule", name="storefront-why-drawer")
        tab.goto("about:blank")
        tab.wait_for_timeout(200)
    finally:
        shopper.close()
