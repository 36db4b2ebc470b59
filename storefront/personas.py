"""Synthetic shoppers who behave like the classic shopper personas, as the events the
storefront's cdp.js would have sent for them (native event shape, DESIGN.md §4).

Deterministic: shopper `n` of seed `s` draws everything from its own generator seeded
with (s, n), so the same seed gives the same events (message ids included) whatever the
clock, however many shoppers come before, and the stream can be cut anywhere. Times are
offsets before `now`; nothing here touches the database.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from storefront.catalog import (
    CATEGORIES,
    GUIDES,
    PRODUCTS,
    Guide,
    Product,
    category_path,
    guide_path,
    product_path,
    product_properties,
    products_in,
    products_on_sale,
)

SITE = "http://127.0.0.1:8000"
SHOP = "Demo shop"
DAY = 86_400.0
SESSION_GAP = 45 * 60.0  # > the 30-minute session timeout: every visit is its own session
SCROLL_STEPS = (25, 50, 75, 100)

BROWSERS: tuple[tuple[str, str], ...] = (
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36",
        "de-DE",
    ),
    (
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/18.1 Safari/605.1.15",
        "en-GB",
    ),
    (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
        "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
        "fr-FR",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Mobile Safari/537.36",
        "nl-NL",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "de-AT",
    ),
    (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
        "en-IE",
    ),
    (
        "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
        "Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
        "es-ES",
    ),
    (
        "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
        "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
        "it-IT",
    ),
)
BOTS: tuple[str, ...] = (
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; SemrushBot/7~bl; +http://www.semrush.com/bot.html)",
)
REFERRERS: tuple[str, ...] = (
    "",
    "",
    "https://www.google.com/",
    "https://www.google.com/",
    "https://duckduckgo.com/",
    "https://www.instagram.com/",
    "https://www.pinterest.com/",
)
FIRST_NAMES = ("Anna", "Ben", "Clara", "David", "Elif", "Finn", "Greta", "Hugo", "Ines", "Jonas",
               "Karin", "Luca", "Mira", "Noah", "Olga", "Paul", "Rosa", "Sami", "Tara", "Yusuf")  # fmt: skip
LAST_NAMES = ("Berger", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Huber", "Jansen",
              "Kowalski", "Larsen", "Moreau", "Novak", "Okafor", "Peters", "Rossi", "Schmidt")  # fmt: skip

SALE: tuple[Product, ...] = products_on_sale()
CHEAP: tuple[Product, ...] = tuple(p for p in PRODUCTS if p.price <= 60 and not p.on_sale)


@dataclass(frozen=True, slots=True)
class Persona:
    key: str
    name: str
    description: str
    share: int  # shoppers out of every 100
    plan: Callable[[Shopper], None] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    name: str
    title: str

    @property
    def url(self) -> str:
        return SITE + self.path


HOME = Page("/demo/", "Home", SHOP)
CART = Page("/demo/cart/", "Cart", f"Your cart — {SHOP}")
CHECKOUT = Page("/demo/checkout/", "Checkout", f"Checkout — {SHOP}")
SALE_PAGE = Page("/demo/sale/", "Sale", f"Sale — {SHOP}")


def product_page(p: Product) -> Page:
    return Page(product_path(p), "Product", f"{p.name} — {SHOP}")


def category_page(slug: str) -> Page:
    name = next(c.name for c in CATEGORIES if c.slug == slug)
    return Page(category_path(slug), "Category", f"{name} — {SHOP}")


def guide_page(g: Guide) -> Page:
    return Page(guide_path(g), "Journal", f"{g.title} — {SHOP}")


class Shopper:
    """One shopper's browser: its ids, device and clock, writing the events its visits
    would send. Persona plans drive it page by page."""

    def __init__(self, *, seed: int, n: int, persona: Persona, now: datetime, days: int) -> None:
        self.rng = random.Random(f"cdp-demo:{seed}:{n}")  # noqa: S311 (demo data)
        self.seed, self.n, self.persona, self.now, self.days = seed, n, persona, now, days
        self.anonymous_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.user_id: str | None = None
        self.user_agent, self.locale = self.rng.choice(BROWSERS)
        self.events: list[dict[str, Any]] = []
        self.cart: list[Product] = []
        self.orders = 0
        self.offset = 0.0  # seconds before now of the clock
        self.page_now: Page = HOME
        self.referrer = ""
        self.favourites = tuple(self.rng.sample([c.slug for c in CATEGORIES], 2))

    # --- time --------------------------------------------------------------------------

    def visits(self, count: int, *, within: float, recent: float = 0.25) -> list[float]:
        """Start offsets (seconds before now), oldest first, of `count` visits spread
        over the last `within` days (and at least `recent` days ago)."""
        span = min(within, self.days) * DAY
        lo = min(recent * DAY, span / 2)
        return sorted((self.rng.uniform(lo, span) for _ in range(count)), reverse=True)

    def visit(self, offset: float, *, referrer: str | None = None) -> bool:
        """Start a visit at `offset` seconds before now (later if the previous visit is
        still going). False when there is no room left before now."""
        offset = min(offset, self.offset - SESSION_GAP) if self.events else offset
        if offset < 15 * 60.0:
            return False
        self.offset = offset
        self.referrer = self.rng.choice(REFERRERS) if referrer is None else referrer
        self.cart = []
        return True

    def _at(self, delta: float = 0.0) -> str:
        at = self.now - timedelta(seconds=self.offset - delta)
        return at.isoformat(timespec="milliseconds")

    # --- events ------------------------------------------------------------------------

    def _emit(self, payload: dict[str, Any], delta: float = 0.0) -> None:
        payload["anonymous_id"] = self.anonymous_id
        if self.user_id is not None and "user_id" not in payload:
            payload["user_id"] = self.user_id
        payload["timestamp"] = self._at(delta)
        payload["context"] = {
            "page": {
                "path": self.page_now.path,
                "url": self.page_now.url,
                "title": self.page_now.title,
                "referrer": self.referrer,
            },
            "user_agent": self.user_agent,
            "locale": self.locale,
        }
        payload["message_id"] = f"demo-{self.seed}-{self.n}-{len(self.events)}"
        self.events.append(payload)

    def track(self, event: str, properties: dict[str, Any], delta: float = 0.0) -> None:
        self._emit({"type": "track", "event": event, "properties": properties}, delta)

    def page(
        self,
        page: Page,
        *,
        dwell: float,
        scroll: int,
        product: Product | None = None,
        then: Callable[[float], None] | None = None,
    ) -> None:
        """A page view: the page event, product_viewed on a product page, the scroll
        thresholds passed, whatever `then` does on the page, then page_dwell on leaving."""
        self.page_now = page
        first = len(self.events)
        self._emit(
            {
                "type": "page",
                "name": page.name,
                "properties": {"path": page.path, "url": page.url, "title": page.title},
            }
        )
        if product is not None:
            self.track("product_viewed", product_properties(product), 0.4)
        steps = [s for s in SCROLL_STEPS if s <= scroll]
        for i, percent in enumerate(steps):
            self.track("scroll_depth", {"percent": percent}, dwell * (i + 1) / (len(steps) + 2))
        if then is not None:
            then(dwell)
        self.track("page_dwell", {"seconds": round(dwell)}, dwell)
        # the page's events in time order (actions on the page come after the scrolls)
        self.events[first:] = sorted(self.events[first:], key=lambda e: e["timestamp"])
        self.referrer = page.url
        self.offset -= dwell + self.rng.uniform(0.5, 3.0)

    def view(self, p: Product, *, dwell: float, scroll: int, add: bool = False) -> None:
        """A product page; `add` puts the product in the cart before leaving."""

        def add_to_cart(dwell: float) -> None:
            self.cart.append(p)
            self.track("add_to_cart", {**product_properties(p), "quantity": 1}, dwell * 0.8)

        self.page(
            product_page(p),
            dwell=dwell,
            scroll=scroll,
            product=p,
            then=add_to_cart if add else None,
        )

    def identify(self) -> None:
        """Log in: the same browser, from now on with user id shopper-<n>."""
        self.user_id = f"shopper-{self.n}"
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        self._emit(
            {
                "type": "identify",
                "user_id": self.user_id,
                "traits": {
                    "email": f"shopper-{self.n}@example.com",
                    "name": f"{first} {last}",
                    "persona": self.persona.key,
                },
            },
            0.5,
        )
        self.offset -= 1.0

    def _lines(self) -> list[dict[str, Any]]:
        return [{**product_properties(p), "quantity": 1} for p in self.cart]

    def checkout(self, *, login: bool = False) -> None:
        """Cart page, checkout page with checkout_started (logging in there if asked)."""
        self.page(CART, dwell=self.rng.uniform(8, 40), scroll=50)
        total = sum(p.price for p in self.cart)

        def started(dwell: float) -> None:
            if login and self.user_id is None:
                self.identify()
            self.track(
                "checkout_started",
                {"value": total, "currency": "EUR", "products": self._lines()},
                1.0,
            )

        self.page(CHECKOUT, dwell=self.rng.uniform(30, 120), scroll=75, then=started)

    def purchase(self) -> None:
        """Pay for the cart (after checkout()): the purchase event, a thank-you home page."""
        self.orders += 1
        self.track(
            "purchase",
            {
                "order_id": f"demo-{self.seed}-{self.n}-o{self.orders}",
                "revenue": sum(p.price for p in self.cart),
                "currency": "EUR",
                "products": self._lines(),
            },
        )
        self.cart = []
        self.offset -= 2.0

    # --- choices -----------------------------------------------------------------------

    def some(self, pool: tuple[Product, ...], k: int) -> list[Product]:
        return self.rng.sample(pool, min(k, len(pool)))

    def scroll(self, low: int, high: int) -> int:
        return self.rng.choice([s for s in (0, *SCROLL_STEPS) if low <= s <= high])


# --- The personas' plans ------------------------------------------------------------------


def _deal_seeker(s: Shopper) -> None:
    # Many visits, many views, mostly of sale items; buys only what is discounted.
    rng = s.rng
    # a third of them are hunting right now (a sale is on): all their visits this fortnight
    starts = s.visits(rng.randint(3, 5), within=14 if rng.random() < 0.35 else 90)
    buying = set(rng.sample(range(len(starts)), min(len(starts), rng.randint(1, 2))))
    login = rng.random() < 0.4
    for i, start in enumerate(starts):
        if not s.visit(start):
            break
        s.page(HOME, dwell=rng.uniform(8, 30), scroll=s.scroll(50, 100))
        listing = SALE_PAGE if rng.random() < 0.6 else category_page(rng.choice(s.favourites))
        s.page(listing, dwell=rng.uniform(15, 50), scroll=s.scroll(75, 100))
        picks = s.some(SALE, rng.randint(3, 5)) + s.some(CHEAP, rng.randint(0, 1))
        rng.shuffle(picks)
        for p in picks:
            add = p.on_sale and not s.cart and (i in buying or rng.random() < 0.15)
            s.view(p, dwell=rng.uniform(12, 50), scroll=s.scroll(50, 100), add=add)
        if s.cart:
            s.checkout(login=login)
            if i in buying:
                s.purchase()


def _high_intent(s: Shopper) -> None:
    # Few visits, few views, straight from an ad to the product, cart and payment.
    rng = s.rng
    for start in s.visits(rng.randint(1, 2), within=75):
        if not s.visit(start, referrer="https://www.google.com/"):
            break
        wanted = products_in(rng.choice(s.favourites))
        picks = s.some(wanted, rng.randint(1, 2))
        for j, p in enumerate(picks):
            s.view(p, dwell=rng.uniform(20, 75), scroll=s.scroll(75, 100), add=j == len(picks) - 1)
        s.checkout(login=rng.random() < 0.85)
        s.purchase()


def _casual_browser(s: Shopper) -> None:
    # Short visits of one or two pages, little scrolling, never a cart.
    rng = s.rng
    for start in s.visits(rng.randint(1, 3), within=40, recent=0.1):
        if not s.visit(start):
            break
        first = rng.random()
        if first < 0.5:
            s.page(HOME, dwell=rng.uniform(3, 20), scroll=s.scroll(0, 25))
        elif first < 0.75:
            s.page(
                category_page(rng.choice(s.favourites)),
                dwell=rng.uniform(4, 25),
                scroll=s.scroll(0, 25),
            )
        else:
            s.view(rng.choice(PRODUCTS), dwell=rng.uniform(4, 25), scroll=s.scroll(0, 25))
        if rng.random() < 0.4:
            s.view(rng.choice(PRODUCTS), dwell=rng.uniform(3, 15), scroll=s.scroll(0, 25))
    if rng.random() < 0.03:
        s.identify()


def _content_explorer(s: Shopper) -> None:
    # Reads the journal: long dwell, deep scroll, then the category a guide is about.
    rng = s.rng
    login = rng.random() < 0.2
    for start in s.visits(rng.randint(2, 5), within=90):
        if not s.visit(start):
            break
        s.page(HOME, dwell=rng.uniform(15, 45), scroll=s.scroll(50, 100))
        guides = rng.sample(GUIDES, rng.choice((1, 1, 2)))
        for g in guides:
            s.page(
                guide_page(g),
                dwell=rng.uniform(g.minutes * 40, g.minutes * 75),
                scroll=s.scroll(75, 100),
            )
        topic = guides[-1].category
        s.page(category_page(topic), dwell=rng.uniform(40, 120), scroll=s.scroll(75, 100))
        buy = rng.random() < 0.08
        for p in s.some(products_in(topic), rng.randint(1, 2)):
            s.view(p, dwell=rng.uniform(60, 180), scroll=100, add=buy and not s.cart)
        if s.cart:
            s.checkout(login=login)
            s.purchase()
        elif login and s.user_id is None:
            s.identify()


def _loyal_customer(s: Shopper) -> None:
    # Logged in, comes back all quarter long, buys again and again (lately too).
    rng = s.rng
    starts = s.visits(rng.randint(4, 7), within=90, recent=0.5)
    starts[-1] = min(starts[-1], rng.uniform(0.5, 8) * DAY)  # a recent visit, with a purchase
    buying = {starts[-1], *rng.sample(starts[:-1], rng.randint(2, 3))}
    if rng.random() < 0.25:  # a regular: four more orders this month
        recent = s.visits(4, within=28, recent=0.5)
        starts = sorted([*starts, *recent], reverse=True)
        buying.update(recent)
    for i, start in enumerate(starts):
        if not s.visit(start, referrer="" if i else None):
            break
        s.page(HOME, dwell=rng.uniform(6, 25), scroll=s.scroll(25, 75))
        if s.user_id is None:
            s.identify()
        taste = s.favourites[0] if rng.random() < 0.7 else s.favourites[1]
        if start in buying:
            s.page(category_page(taste), dwell=rng.uniform(10, 40), scroll=s.scroll(50, 100))
            picks = s.some(products_in(taste), rng.randint(1, 3))
            for j, p in enumerate(picks):
                add = j == len(picks) - 1 or rng.random() < 0.3
                s.view(p, dwell=rng.uniform(15, 60), scroll=s.scroll(50, 100), add=add)
            s.checkout()
            s.purchase()
        else:
            for p in s.some(products_in(taste), rng.randint(1, 3)):
                s.view(p, dwell=rng.uniform(10, 45), scroll=s.scroll(25, 100))


def _cart_abandoner(s: Shopper) -> None:
    # Browses, fills a cart, starts checkout and leaves; half of them in the last day.
    rng = s.rng
    starts = s.visits(rng.randint(1, 3), within=60, recent=1.0)
    if rng.random() < 0.5:
        starts.append(rng.uniform(1.0, 20.0) * 3600)  # within the last 24 hours
    login = rng.random() < 0.3
    for i, start in enumerate(starts):
        if not s.visit(start):
            break
        last = i == len(starts) - 1
        s.page(HOME, dwell=rng.uniform(6, 30), scroll=s.scroll(25, 75))
        taste = rng.choice(s.favourites)
        s.page(category_page(taste), dwell=rng.uniform(10, 40), scroll=s.scroll(50, 100))
        picks = s.some(products_in(taste), rng.randint(2, 4))
        for p in picks:
            add = (last or rng.random() < 0.5) and (not s.cart or rng.random() < 0.3)
            s.view(p, dwell=rng.uniform(15, 70), scroll=s.scroll(50, 100), add=add)
        if s.cart and (last or rng.random() < 0.5):
            s.checkout(login=login)  # …and gone


def _crawler(s: Shopper) -> None:
    # A bot that runs JavaScript: many pages fast, no scrolling; ingestion flags it.
    rng = s.rng
    s.user_agent, s.locale = rng.choice(BOTS), "en-US"
    for start in s.visits(rng.randint(1, 2), within=90):
        if not s.visit(start, referrer=""):
            break
        s.page(HOME, dwell=rng.uniform(0.5, 2), scroll=0)
        for p in s.some(PRODUCTS, rng.randint(6, 14)):
            s.view(p, dwell=rng.uniform(0.3, 1.5), scroll=0)


PERSONAS: tuple[Persona, ...] = (
    Persona("deal_seeker", "Deal seeker",
            "Many visits and views, mostly of sale items; buys only discounted items.",
            18, _deal_seeker),
    Persona("high_intent", "High-intent buyer",
            "Lands on a product from search, adds it within a minute and pays.", 12,
            _high_intent),
    Persona("casual_browser", "Casual browser",
            "Short visits of one or two pages, hardly scrolls, never buys.", 28,
            _casual_browser),
    Persona("content_explorer", "Content explorer",
            "Reads the journal's guides with long dwell and deep scroll.", 12,
            _content_explorer),
    Persona("loyal_customer", "Loyal customer",
            "Logged in, visits all quarter, buys three times or more.", 12, _loyal_customer),
    Persona("cart_abandoner", "Cart abandoner",
            "Fills a cart, starts checkout and leaves; half of them in the last 24 hours.",
            16, _cart_abandoner),
    Persona("crawler", "Crawler (bot)",
            "A JavaScript-running bot; its events are flagged and left out.", 2, _crawler),
)  # fmt: skip
assert sum(p.share for p in PERSONAS) == 100
BY_KEY = {p.key: p for p in PERSONAS}


@lru_cache(maxsize=64)
def _persona_table(seed: int, block: int) -> tuple[Persona, ...]:
    table = [p for p in PERSONAS for _ in range(p.share)]
    random.Random(f"cdp-demo-personas:{seed}:{block}").shuffle(table)  # noqa: S311
    return tuple(table)


def persona_of(*, seed: int, n: int) -> Persona:
    """Shopper n's persona: every 100 consecutive shoppers hold each persona's exact
    share, in an order shuffled per seed."""
    block, slot = divmod(n, 100)
    return _persona_table(seed, block)[slot]


def shopper_events(
    *, seed: int, n: int, now: datetime, days: int = 90
) -> tuple[Persona, list[dict[str, Any]]]:
    """Shopper n's persona and events, oldest first."""
    persona = persona_of(seed=seed, n=n)
    shopper = Shopper(seed=seed, n=n, persona=persona, now=now, days=days)
    persona.plan(shopper)
    return persona, shopper.events


def shoppers(
    *, seed: int, count: int, now: datetime, days: int = 90, start: int = 0
) -> Iterator[tuple[int, Persona, list[dict[str, Any]]]]:
    """(n, persona, events) of shoppers start … count - 1, one at a time."""
    for n in range(start, count):
        persona, events = shopper_events(seed=seed, n=n, now=now, days=days)
        yield n, persona, events
