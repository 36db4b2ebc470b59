"""The demo storefront's pages, cart, checkout and login (server side; the browser side
is in tests/e2e)."""

from __future__ import annotations

import html
import json
import re
from typing import Any

import pytest
from django.test import Client

from profiles.keys import user_hash
from rules.demo import demo_rules_ensure
from segments.demo import demo_segments_ensure
from storefront.catalog import CATEGORIES, PRODUCTS, product_properties
from storefront.models import ShopConfig

pytestmark = pytest.mark.django_db


def _attr(page: str, name: str) -> Any:
    found = re.search(rf'{name}="([^"]*)"', page)
    assert found, f"{name} not on the page"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture
def shop() -> Client:
    return Client()


def test_home_renders_default_content_and_the_sdk_tag(shop: Client) -> None:
    demo_segments_ensure()
    demo_rules_ensure()
    page = shop.get("/demo/").content.decode()
    config = ShopConfig.objects.get()
    assert f'data-write-key="{config.write_key}"' in page
    assert 'data-consent="opt-in"' in page
    assert 'data-cdp-slot="home_hero"' in page
    # The default variant's content is in the HTML before any decision.
    assert "New season, new favourites" in page
    assert "<script>" not in page  # no inline code: the pages hold under a strict CSP


def test_shop_key_is_made_once_and_works_as_a_write_key(shop: Client) -> None:
    shop.get("/demo/")
    shop.get("/demo/cart/")
    config = ShopConfig.objects.get()
    assert config.write_key.startswith("wk_")
    answer = Client().post(
        "/api/v1/events",
        {"type": "track", "event": "x", "anonymous_id": "a1"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {config.write_key}",
    )
    assert answer.status_code == 202


@pytest.mark.parametrize("category", [c.slug for c in CATEGORIES])
def test_every_category_lists_its_products(shop: Client, category: str) -> None:
    page = shop.get(f"/demo/c/{category}/").content.decode()
    for p in PRODUCTS:
        if p.category == category:
            assert f"/demo/p/{p.id}/" in page


def test_product_page_carries_its_view_event_and_context(shop: Client) -> None:
    p = PRODUCTS[0]
    page = shop.get(f"/demo/p/{p.id}/").content.decode()
    assert _attr(page, "data-product") == product_properties(p)
    assert f'data-cdp-context-item="{p.id}"' in page
    assert 'data-cdp-track="add_to_cart"' in page


def test_unknown_pages_are_404(shop: Client) -> None:
    assert shop.get("/demo/p/no-such-thing/").status_code == 404
    assert shop.get("/demo/c/no-such-thing/").status_code == 404
    assert shop.get("/demo/img/no-such-thing.svg").status_code == 404
    assert shop.post("/demo/cart/add/", {"product_id": "nope"}).status_code == 404


def test_product_image_is_a_generated_svg(shop: Client) -> None:
    answer = shop.get(f"/demo/img/{PRODUCTS[0].id}.svg")
    assert answer["Content-Type"] == "image/svg+xml"
    assert answer.content.startswith(b"<svg")


def test_cart_checkout_and_order_confirmation(shop: Client) -> None:
    a, b = PRODUCTS[0], PRODUCTS[1]
    shop.post("/demo/cart/add/", {"product_id": a.id})
    shop.post("/demo/cart/add/", {"product_id": a.id})
    shop.post("/demo/cart/add/", {"product_id": b.id, "quantity": "x"})  # bad quantity → 1
    cart = shop.get("/demo/cart/").content.decode()
    assert 'data-testid="cart-count">3<' in cart
    assert f"{2 * a.price + b.price} €" in cart

    shop.post("/demo/cart/remove/", {"product_id": b.id})
    bad = shop.post("/demo/checkout/", {"email": "nope", "name": ""}).content.decode()
    assert "Enter an email address." in bad
    assert "Enter your name." in bad

    done = shop.post("/demo/checkout/", {"email": "ann@example.com", "name": "Ann"})
    assert done.status_code == 302
    confirmation = shop.get(done["Location"]).content.decode()
    purchase = _attr(confirmation, "data-purchase")
    assert purchase["revenue"] == 2 * a.price
    assert purchase["products"][0]["quantity"] == 2
    # The confirmation is shown once: a reload does not report the purchase again.
    assert shop.get("/demo/order/").status_code == 302
    assert 'data-testid="cart-count">0<' in shop.get("/demo/cart/").content.decode()


def test_checkout_with_an_empty_cart_goes_back_to_the_cart(shop: Client) -> None:
    assert shop.get("/demo/checkout/")["Location"] == "/demo/cart/"


def test_login_identifies_once_with_a_server_signed_user_hash(shop: Client) -> None:
    answer = shop.post("/demo/login/", {"email": "Shopper-12@Example.com", "next": "/demo/cart/"})
    assert answer["Location"] == "/demo/cart/"
    page = shop.get("/demo/cart/").content.decode()
    who = _attr(page, "data-identify")
    secret = ShopConfig.objects.get().source.identity_secret
    assert who["userId"] == "shopper-12"
    assert who["userHash"] == user_hash(secret, "shopper-12")
    assert who["traits"]["email"] == "shopper-12@example.com"
    assert "data-identify" not in shop.get("/demo/cart/").content.decode()  # once
    shop.post("/demo/logout/")
    assert 'data-logout="1"' in shop.get("/demo/").content.decode()


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/", "/admin/"])
def test_login_never_redirects_off_the_shop(shop: Client, target: str) -> None:
    answer = shop.post("/demo/login/", {"email": "a@example.com", "next": target})
    assert answer["Location"] == "/demo/"


def test_login_refuses_a_non_email(shop: Client) -> None:
    page = shop.post("/demo/login/", {"email": "bob"}).content.decode()
    assert "Enter an email address" in page


def test_the_journal_lists_guides_and_each_guide_shows_gear(shop: Client) -> None:
    from storefront.catalog import GUIDES

    index = shop.get("/demo/journal/").content.decode()
    for g in GUIDES:
        assert f"/demo/journal/{g.slug}/" in index
        page = shop.get(f"/demo/journal/{g.slug}/").content.decode()
        assert g.title in page
        assert f'data-cdp-context-category="{g.category}"' in page
    assert shop.get("/demo/journal/no-such-guide/").status_code == 404
