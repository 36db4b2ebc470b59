"""static/cdp.js in headless Chromium against the live server: what a shop's page sends
and what ends up stored (profiles.models.Event), consent, retries, rendering decisions.

The test page is served by Playwright at the live server's own origin (/sdk-test/), with
a strict `script-src 'self'` policy, and loads the real /static/cdp.js from the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest

from consent.models import ConsentRecord
from profiles.models import Event, Identity, Profile
from profiles.services import SourceKeys, source_create
from rules import services as rule_services
from rules.models import Slot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>SDK test page</title>
  <script src="/static/cdp.js" data-write-key="{key}" data-host="" data-consent="{consent}"
          data-flush-interval="200" defer></script>
</head>
<body data-cdp-context-category="shoes">
  <section data-cdp-slot="home_hero" data-cdp-context-item="sku-1" hidden>
    <h1 data-cdp-field="title">Default title</h1>
    <p data-cdp-field="body">Default body</p>
    <a data-cdp-field="cta.url" data-cdp-attr="href" href="/default"><span
       data-cdp-field="cta.label">Default link</span></a>
  </section>
  <section data-cdp-slot="recs">
    <h2 data-cdp-field="title">Picked for you</h2>
    <ul>
      <template data-cdp-item>
        <li><a data-cdp-field="url" data-cdp-attr="href"><img data-cdp-field="image_url"
            data-cdp-attr="src" alt=""><span data-cdp-field="title"></span>
            <b data-cdp-field="price"></b></a></li>
      </template>
    </ul>
  </section>
  <button id="buy" data-cdp-track="cta_clicked" data-cdp-props='{{"where": "hero", "n": 2}}'>
    <span>Buy now</span>
  </button>
  <div class="tall">{filler}</div>
</body>
</html>
"""
FILLER = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>" * 200


@pytest.fixture
def sdk_source(live_server: Any, cdp_purposes: None) -> SourceKeys:
    return source_create(name="SDK shop", allowed_origins=[live_server.url])


@pytest.fixture
def open_page(page: Any, live_server: Any, sdk_source: SourceKeys) -> Callable[..., Any]:
    """Serves the test page at <live server>/sdk-test/ and opens it; collects CSP
    violations and console errors on `page.problems`."""
    problems: list[str] = []
    page.problems = problems
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text)
            if msg.type == "error" or "Content Security Policy" in msg.text
            else None
        ),
    )
    page.on("pageerror", lambda exc: problems.append(str(exc)))

    def serve(consent: str, key: str) -> None:
        html = PAGE.format(key=key, consent=consent, filler=FILLER)
        page.route(
            live_server.url + "/sdk-test/",
            lambda route: route.fulfill(
                status=200,
                content_type="text/html; charset=utf-8",
                headers={"Content-Security-Policy": CSP},
                body=html,
            ),
        )

    def open_(consent: str = "opt-out", key: str | None = None) -> Any:
        serve(consent, key or sdk_source.write_key)
        page.goto(live_server.url + "/sdk-test/")
        page.wait_for_function("window.cdp && cdp.anonymousId()")
        return page

    return open_


def cookie(page: Any, name: str) -> str | None:
    return next((c["value"] for c in page.context.cookies() if c["name"] == name), None)


def stored(**filters: Any) -> list[Event]:
    return list(Event.objects.filter(**filters).order_by("id"))


def test_static_cdp_js_is_served_by_the_live_server(page: Any, live_server: Any) -> None:
    # given the app's static files / when the browser asks for the SDK
    response = page.request.get(live_server.url + "/static/cdp.js")
    # then the real file comes back
    assert response.status == 200
    assert "window.cdp" in response.text()


def test_automatic_page_view_is_stored_for_the_first_party_anonymous_id(
    open_page: Callable[..., Any], eventually: Callable[..., Any], sdk_source: SourceKeys
) -> None:
    # given / when a visitor opens a page with the snippet
    page = open_page()

    # then the page view is stored for the anonymous id kept in the cdp_aid cookie
    aid = eventually(page, lambda: cookie(page, "cdp_aid"))
    assert page.evaluate("localStorage.getItem('cdp_aid')") == aid
    assert page.evaluate("cdp.anonymousId()") == aid
    [view] = eventually(page, lambda: stored(type="page", anonymous_id=aid))
    assert view.source_id == sdk_source.source.pk
    assert uuid.UUID(view.message_id)
    assert view.context["page"]["path"] == "/sdk-test/"
    assert view.context["page"]["title"] == "SDK test page"
    assert view.is_bot is False
    assert page.problems == []  # no CSP violation under script-src 'self', no errors


def test_track_and_identify_store_the_event_and_the_traits(
    open_page: Callable[..., Any], eventually: Callable[..., Any]
) -> None:
    # given a visitor on the page
    page = open_page()
    aid = page.evaluate("cdp.anonymousId()")

    # when the shop identifies them and tracks an event
    page.evaluate(
        """() => {
          cdp.identify("shopper-7", {plan: "gold", first_name: "Ann"});
          cdp.track("product_viewed", {product_id: "sku-1", price: 42});
          return cdp.flush();
        }"""
    )

    # then both are stored for the same person, with the traits on the profile
    [viewed] = eventually(page, lambda: stored(event="product_viewed"))
    assert viewed.user_id == "shopper-7"
    assert viewed.anonymous_id == aid
    assert viewed.properties == {"product_id": "sku-1", "price": 42}
    [identify] = stored(type="identify")
    assert identify.traits == {"plan": "gold", "first_name": "Ann"}
    profile = Profile.objects.get(pk=viewed.profile_id)
    assert profile.traits["plan"] == "gold"
    assert Identity.objects.filter(profile=profile, kind="user_id", value="shopper-7").exists()
    assert Identity.objects.filter(profile=profile, kind="anonymous_id", value=aid).exists()
    assert page.evaluate("[cdp.userId(), localStorage.getItem('cdp_uid')]") == ["shopper-7"] * 2


def test_identify_with_user_hash_is_believed_by_a_verifying_source(
    open_page: Callable[..., Any], eventually: Callable[..., Any], live_server: Any
) -> None:
    # given a source that verifies user ids, and the hash the shop's server computed
    strict = source_create(
        name="Strict shop", allowed_origins=[live_server.url], require_identity_verification=True
    )
    user_hash = hmac.new(
        strict.source.identity_secret.encode(), b"shopper-9", hashlib.sha256
    ).hexdigest()
    page = open_page(key=strict.write_key)

    # when the page identifies the visitor with it and tracks
    page.evaluate(
        "h => { cdp.identify('shopper-9', {plan: 'silver'}, {userHash: h}); cdp.track('wishlist_added'); }",
        user_hash,
    )

    # then the user id is linked to the profile (an unverified one would only be a trait)
    [event] = eventually(page, lambda: stored(event="wishlist_added"))
    assert event.user_id == "shopper-9"
    assert Identity.objects.filter(
        profile_id=event.profile_id, kind="user_id", value="shopper-9"
    ).exists()
    assert "unverified_user_id" not in Profile.objects.get(pk=event.profile_id).traits


def test_alias_and_reset(open_page: Callable[..., Any], eventually: Callable[..., Any]) -> None:
    # given a visitor
    page = open_page()
    first_aid = page.evaluate("cdp.anonymousId()")

    # when they sign up (alias) and later log out (reset)
    page.evaluate("cdp.alias('member-1')")
    after = page.evaluate("(() => { cdp.reset(); return [cdp.anonymousId(), cdp.userId()]; })()")
    page.evaluate("cdp.track('after_logout'); cdp.flush()")

    # then the alias names the former id, and the reset starts a new anonymous visitor
    [alias] = eventually(page, lambda: stored(type="alias"))
    assert alias.user_id == "member-1"
    assert alias.anonymous_id == first_aid
    assert after[0] != first_aid
    assert after[1] is None
    assert cookie(page, "cdp_aid") == after[0]
    [later] = eventually(page, lambda: stored(event="after_logout"))
    assert later.anonymous_id == after[0]
    assert later.user_id is None


def test_a_click_on_a_tracked_element_sends_its_event_and_properties(
    open_page: Callable[..., Any], eventually: Callable[..., Any]
) -> None:
    # given a page with <button data-cdp-track="cta_clicked" data-cdp-props='{…}'>
    page = open_page()

    # when the visitor clicks inside it
    page.click("#buy span")

    # then the event is stored with the element's properties
    [click] = eventually(page, lambda: stored(event="cta_clicked"))
    assert click.properties == {"where": "hero", "n": 2}


def test_scroll_depth_is_sent_once_per_threshold(
    open_page: Callable[..., Any], eventually: Callable[..., Any]
) -> None:
    # given a long page
    page = open_page()

    # when the visitor scrolls to the middle, to the end, back up and down again
    page.mouse.wheel(0, 300)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight / 2)")
    page.wait_for_timeout(100)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(100)
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(100)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.evaluate("cdp.flush()")

    # then 25, 50, 75 and 100 % arrive once each
    depths = eventually(
        page, lambda: len(stored(event="scroll_depth")) >= 4 and stored(event="scroll_depth")
    )
    page.wait_for_timeout(500)
    depths = stored(event="scroll_depth")
    assert sorted(e.properties["percent"] for e in depths) == [25, 50, 75, 100]


def _hide(page: Any, hidden: bool) -> None:
    # Headless Chromium has no window to minimize: the state is faked the way a tab
    # switch reports it.
    page.evaluate(
        """hidden => {
          Object.defineProperty(document, "visibilityState",
            {configurable: true, get: () => hidden ? "hidden" : "visible"});
          document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_dwell_counts_visible_time_only_and_leaves_by_beacon_on_page_hide(
    open_page: Callable[..., Any], eventually: Callable[..., Any], page: Any, live_server: Any
) -> None:
    # given a visitor who reads for ~1.5 s, switches tabs for 3 s, reads ~1.5 s more
    # (an unloading page's requests are not reported to Playwright: the beacons are
    # recorded in sessionStorage, which the next page of the tab can read)
    page.add_init_script(
        """(() => {
          const send = navigator.sendBeacon.bind(navigator);
          navigator.sendBeacon = (url, data) => {
            const seen = JSON.parse(sessionStorage.getItem("beacons") || "[]");
            seen.push(JSON.parse(data));
            sessionStorage.setItem("beacons", JSON.stringify(seen));
            return send(url, data);
          };
        })()"""
    )
    page = open_page()
    eventually(page, lambda: stored(type="page"))
    page.wait_for_timeout(1500)
    _hide(page, True)
    page.wait_for_timeout(3000)
    _hide(page, False)
    page.wait_for_timeout(1500)

    # when they leave the page
    page.goto(live_server.url + "/healthz")

    # then two page_dwell events of the visible time only were sent by sendBeacon
    dwell = eventually(
        page, lambda: len(stored(event="page_dwell")) == 2 and stored(event="page_dwell")
    )
    assert [e.properties["seconds"] for e in dwell] in ([1, 1], [1, 2], [2, 1], [2, 2])
    beacons = json.loads(page.evaluate("sessionStorage.getItem('beacons')"))
    sent = [m["event"] for b in beacons for m in b["batch"] if m.get("event")]
    assert sent.count("page_dwell") == 2
    assert all(b["writeKey"] and b["sentAt"] for b in beacons)


def test_a_failed_send_is_retried_with_the_same_message_ids_and_stored_once(
    open_page: Callable[..., Any], eventually: Callable[..., Any], page: Any, live_server: Any
) -> None:
    # given the first /v1/batch reaches the server but the browser sees a network error
    attempts: list[list[str]] = []

    def flaky(route: Any) -> None:
        body = json.loads(route.request.post_data)
        attempts.append([m["messageId"] for m in body["batch"]])
        if len(attempts) == 1:
            route.fetch()  # the server stores the batch …
            route.abort("connectionreset")  # … and the answer is lost
        else:
            route.continue_()

    page.route(live_server.url + "/v1/batch", flaky)

    # when the page view and a track go out
    page = open_page()
    page.evaluate("cdp.track('hero_seen', {slot: 'home_hero'})")

    # then the SDK retries with the same messageIds and each event is stored once
    eventually(
        page, lambda: len(attempts) >= 2 and not page.evaluate("localStorage.getItem('cdp_queue')")
    )
    first = attempts[0]
    retried = [mid for batch in attempts[1:] for mid in batch]
    assert set(first) <= set(retried)
    assert Event.objects.filter(message_id__in=first).count() == len(first)
    all_ids = {mid for batch in attempts for mid in batch}
    assert Event.objects.count() == len(all_ids)
    assert len(stored(type="page")) == 1


def test_a_reload_while_offline_neither_loses_nor_duplicates_the_queue(
    open_page: Callable[..., Any], eventually: Callable[..., Any], page: Any, live_server: Any
) -> None:
    # given the server cannot be reached: the page view waits in localStorage
    page.route(live_server.url + "/v1/batch", lambda route: route.abort("internetdisconnected"))
    page = open_page()
    queued = eventually(
        page, lambda: json.loads(page.evaluate("localStorage.getItem('cdp_queue') || '[]'"))
    )
    first_view = queued[0]["messageId"]

    # when the network is back and the visitor reloads
    page.unroute(live_server.url + "/v1/batch")
    page.reload()

    # then the first page view arrives once, and so does the second
    eventually(page, lambda: len(stored(type="page")) == 2)
    page.wait_for_timeout(1500)
    views = stored(type="page")
    assert len(views) == 2
    assert first_view in {v.message_id for v in views}
    assert page.evaluate("localStorage.getItem('cdp_queue')") is None


def _api_requests(page: Any) -> list[str]:
    seen: list[str] = []
    page.on(
        "request",
        lambda r: seen.append(r.url) if "/v1/" in r.url else None,
    )
    return seen


def test_opt_in_sends_nothing_before_consent_then_the_held_events_on_grant(
    open_page: Callable[..., Any], eventually: Callable[..., Any], page: Any
) -> None:
    # given opt-in mode and a visitor who has not chosen yet
    seen = _api_requests(page)
    page = open_page("opt-in")
    page.click("#buy")
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    before = page.evaluate("cdp.decide().then(d => [d, cdp.consent.status()])")
    page.wait_for_timeout(1000)

    # then nothing at all left the browser, no identifier was stored, the slot kept its markup
    assert seen == []
    assert before == [{}, "unknown"]
    assert cookie(page, "cdp_aid") is None
    assert page.is_hidden("[data-cdp-slot=home_hero]")
    assert Event.objects.count() == 0

    # when they grant analytics
    state = page.evaluate(
        "cdp.consent.set({analytics: true, personalization: true, marketing: false})"
    )

    # then the consent is recorded and the held events are stored for the same visitor
    aid = page.evaluate("cdp.anonymousId()")
    assert state["purposes"]["analytics"]["granted"] is True
    assert cookie(page, "cdp_aid") == aid
    assert json.loads(unquote(cookie(page, "cdp_consent") or "")) == {
        "analytics": True,
        "personalization": True,
        "marketing": False,
    }
    assert page.evaluate("cdp.consent.status()") == "granted"
    events = eventually(
        page, lambda: len(stored(anonymous_id=aid)) >= 3 and stored(anonymous_id=aid)
    )
    names = {e.event or e.type for e in events}
    assert {"page", "cta_clicked", "scroll_depth"} <= names
    assert ConsentRecord.objects.filter(purpose__code="analytics", granted=True).count() == 1
    assert any(u.endswith("/api/v1/consent") for u in seen)


def test_opt_in_denied_sends_nothing_and_stores_nothing_even_after_a_reload(
    open_page: Callable[..., Any], page: Any
) -> None:
    # given opt-in mode
    seen = _api_requests(page)
    page = open_page("opt-in")
    page.click("#buy")

    # when the visitor declines
    page.evaluate("cdp.consent.set({analytics: false, personalization: false, marketing: false})")
    page.click("#buy")
    page.reload()
    page.wait_for_function("window.cdp")
    page.click("#buy")
    page.evaluate("cdp.decide()")
    page.wait_for_timeout(1000)

    # then nothing reached the API, nothing is stored, the default markup stays
    assert page.evaluate("cdp.consent.status()") == "denied"
    assert seen == []
    assert Event.objects.count() == 0
    assert Profile.objects.count() == 0
    assert page.text_content("[data-cdp-slot=home_hero] h1") == "Default title"


def test_opt_out_mode_stops_sending_after_a_withdrawal(
    open_page: Callable[..., Any], eventually: Callable[..., Any]
) -> None:
    # given opt-out mode: events flow
    page = open_page("opt-out")
    eventually(page, lambda: stored(type="page"))

    # when the visitor withdraws analytics
    page.evaluate("cdp.consent.set({analytics: false})")
    page.click("#buy")
    page.wait_for_timeout(800)

    # then the withdrawal is recorded and the click is not stored
    assert ConsentRecord.objects.filter(purpose__code="analytics", granted=False).count() == 1
    assert stored(event="cta_clicked") == []


def test_decide_renders_the_slot_and_dispatches_cdp_decision(
    open_page: Callable[..., Any], eventually: Callable[..., Any], page: Any
) -> None:
    # given a slot whose default variant has a title, body and call to action
    rule_services.slot_save(
        slot=Slot(key="home_hero"),
        actor="test",
        variants=[
            {
                "key": "welcome",
                "title": "Welcome back",
                "body": "New arrivals every week",
                "cta_label": "Shop shoes",
                "cta_url": "https://shop.example/c/shoes",
            }
        ],
        default_variant="welcome",
    )
    asked: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            asked.append(json.loads(r.post_data)) if r.url.endswith("/api/v1/decide") else None
        ),
    )
    page = open_page()
    page.evaluate(
        """() => {
          window.heard = [];
          document.addEventListener("cdp:decision", e => heard.push([e.target.dataset.cdpSlot, e.detail.slot, e.detail.decision.variant]));
          document.addEventListener("cdp:decisions", e => heard.push(Object.keys(e.detail)));
        }"""
    )

    # when the page asks for its decision
    decisions = page.evaluate("cdp.decide(['home_hero'])")

    # then the slot shows the variant's content, marked with the variant and its source
    assert decisions["home_hero"]["variant"] == "welcome"
    hero = page.locator("[data-cdp-slot=home_hero]")
    assert hero.is_visible()
    assert page.text_content("[data-cdp-slot=home_hero] h1") == "Welcome back"
    assert page.text_content("[data-cdp-slot=home_hero] p") == "New arrivals every week"
    assert page.text_content("[data-cdp-slot=home_hero] a") == "Shop shoes"
    assert hero.locator("a").get_attribute("href") == "https://shop.example/c/shoes"
    assert hero.get_attribute("data-cdp-variant") == "welcome"
    assert hero.get_attribute("data-cdp-source") == "default"
    assert page.evaluate("heard") == [["home_hero", "home_hero", "welcome"], ["home_hero"]]
    [request] = asked
    assert request["anonymous_id"] == page.evaluate("cdp.anonymousId()")
    assert request["slots"] == ["home_hero"]
    assert request["context"] == {"page": "/sdk-test/", "category": "shoes", "item": "sku-1"}
    assert page.problems == []


def test_decide_renders_recommended_items_through_the_template(
    open_page: Callable[..., Any], page: Any, live_server: Any
) -> None:
    # given a recommendations answer (faked here: the slot pipeline is tested elsewhere)
    items = [
        {
            "item_id": "sku-1",
            "title": "Trail shoe",
            "price": 89,
            "url": "/p/sku-1/",
            "image_url": "/img/sku-1.svg",
            "reason": "popular",
        },
        {
            "item_id": "sku-2",
            "title": "Rain jacket <b>",
            "price": 120,
            "url": "/p/sku-2/",
            "image_url": "javascript:alert(1)",
            "reason": "similar",
        },
    ]
    answer = {
        "profile_id": None,
        "decisions": {
            "recs": {
                "variant": "recs",
                "content": {"title": "For you", "items": items},
                "source": "recommendation",
                "reason": "trending",
                "decision_id": str(uuid.uuid4()),
            }
        },
    }
    page.route(
        live_server.url + "/api/v1/decide",
        lambda route: route.fulfill(
            status=200, content_type="application/json", body=json.dumps(answer)
        ),
    )
    page = open_page()

    # when the slots are decided twice (a re-render must not pile up items)
    page.evaluate("cdp.decide(['recs'])")
    page.evaluate("cdp.decide(['recs'])")

    # then one <li> per item, with text, links and images filled and no script URL
    assert page.text_content("[data-cdp-slot=recs] h2") == "For you"
    rows = page.locator("[data-cdp-slot=recs] li")
    assert rows.count() == 2
    assert rows.nth(0).locator("span").text_content() == "Trail shoe"
    assert rows.nth(0).locator("b").text_content() == "89"
    assert rows.nth(0).locator("a").get_attribute("href") == "/p/sku-1/"
    assert rows.nth(0).locator("img").get_attribute("src") == "/img/sku-1.svg"
    assert rows.nth(1).locator("span").text_content() == "Rain jacket <b>"
    assert rows.nth(1).locator("img").get_attribute("src") is None
    assert page.get_attribute("[data-cdp-slot=recs]", "data-cdp-source") == "recommendation"
