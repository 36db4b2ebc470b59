"""Segment's own browser library, analytics.js (`@segment/analytics-next` from npm,
pinned in tests/e2e/js and served from disk, never from a CDN), pointed at this server:
a shop already on Segment changes only its CDN/API host and its events land here."""

from __future__ import annotations

import mimetypes
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from profiles.models import Event
from profiles.services import source_create

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

UMD = Path(__file__).parent / "js" / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
PAGE = """<!doctype html><html><head><title>Segment shop</title>
<script src="/vendor/analytics-next/index.js"></script></head><body><h1>Shop</h1></body></html>"""


@pytest.fixture
def analytics_page(page: Any, live_server: Any) -> Any:
    if not (UMD / "index.js").exists():
        pytest.skip(
            "e2e: @segment/analytics-next is not installed (python3 dev.py test runs npm ci)"
        )

    def from_disk(route: Any) -> None:
        name = route.request.url.rsplit("/", 1)[-1].split("?")[0]
        path = UMD / name
        if not path.is_file():
            route.fulfill(status=404, body="not found")
            return
        route.fulfill(
            status=200,
            body=path.read_bytes(),
            content_type=mimetypes.guess_type(name)[0] or "application/javascript",
        )

    # The library itself, and the chunks it loads lazily from its CDN (here: this server).
    page.route(live_server.url + "/vendor/analytics-next/*", from_disk)
    page.route(live_server.url + "/analytics-next/bundles/*", from_disk)
    page.route(
        live_server.url + "/segment-shop/",
        lambda route: route.fulfill(status=200, body=PAGE, content_type="text/html"),
    )
    return page


def test_analytics_js_sends_to_the_cdp_with_only_the_host_changed(
    analytics_page: Any, live_server: Any, eventually: Callable[..., Any], cdp_purposes: None
) -> None:
    keys = source_create(name="Segment shop", allowed_origins=[live_server.url])
    page = analytics_page
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None,
    )
    page.goto(live_server.url + "/segment-shop/")
    anonymous_id = page.evaluate(
        """async ([writeKey, cdnURL]) => {
            const [analytics] = await window.AnalyticsNext.AnalyticsBrowser.load(
                {writeKey, cdnURL});
            await analytics.page("Home");
            await analytics.track("Product Viewed", {product_id: "sku-1", price: 89});
            await analytics.identify("ajs-user-1", {plan: "pro"});
            return analytics.user().anonymousId();
        }""",
        [keys.write_key, live_server.url],
    )
    stored = eventually(
        page,
        lambda: (
            rows
            if len(rows := list(Event.objects.filter(anonymous_id=anonymous_id).order_by("id")))
            >= 3
            else None
        ),
    )
    by_type = {e.type: e for e in stored}
    assert by_type["track"].event == "Product Viewed"
    assert by_type["track"].properties == {"product_id": "sku-1", "price": 89}
    assert by_type["page"].context["page"]["title"] == "Segment shop"
    assert by_type["identify"].user_id == "ajs-user-1"
    assert by_type["identify"].traits["plan"] == "pro"
    assert all(e.source_id == keys.source.pk for e in stored)
    assert outside == []  # nothing went to Segment's CDN or API
