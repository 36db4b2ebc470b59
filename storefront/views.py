"""The demo storefront (`/demo/`): a small shop built the way a customer's shop would use
the CDP — server-rendered pages with default content, `cdp.js` for tracking, consent and
decisions, `shop.js` for the shop's own wiring (no inline scripts, so a strict CSP holds).

Thin views: the cart and orders live in the session (storefront.services), the catalog
in storefront.catalog; what the CDP knows comes only through its public API, from the
browser."""

from __future__ import annotations

import html
from typing import Any

import orjson
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from profiles.keys import user_hash
from storefront import services
from storefront.catalog import (
    CATEGORIES,
    GUIDES,
    PRODUCTS,
    Product,
    product,
    product_properties,
    products_in,
)
from storefront.selectors import slot_defaults

HOME_SLOTS = ["promo_strip", "home_hero", "content_feed", "home_recommendations"]
PRODUCT_SLOTS = ["promo_strip", "product_note", "product_similar"]
PAGE_SLOTS = ["promo_strip"]


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _page(request: HttpRequest, template: str, *, slots: list[str], **extra: Any) -> HttpResponse:
    config, _ = services.shop_config_ensure()
    session = request.session
    user = session.get(services.USER_KEY)
    identify = None
    if user and session.pop(services.IDENTIFY_KEY, False):
        identify = {
            "userId": user["user_id"],
            "userHash": user_hash(config.source.identity_secret, user["user_id"]),
            "traits": {"email": user["email"], "name": user["name"]},
        }
    lines = services.cart_lines(session)
    context = {
        "write_key": config.write_key,
        "api_host": "",
        "consent_mode": "opt-in",
        "categories": CATEGORIES,
        "user": user,
        "identify_json": _json(identify) if identify else "",
        "logout": session.pop(services.LOGOUT_KEY, False),
        "cart_count": sum(line.quantity for line in lines),
        "slot": slot_defaults(slots),
        **extra,
    }
    return render(request, f"storefront/{template}", context)


def _local(url: str) -> bool:
    """Only the shop's own pages are followed after login (no open redirect)."""
    return url.startswith("/demo/") and url_has_allowed_host_and_scheme(url, allowed_hosts=None)


def _cards(items: list[Product]) -> list[dict[str, Any]]:
    return [{"p": p, "props": _json(product_properties(p))} for p in items]


def home(request: HttpRequest) -> HttpResponse:
    featured = [p for p in PRODUCTS if p.compare_at][:4] or list(PRODUCTS[:4])
    return _page(request, "home.html", slots=HOME_SLOTS, featured=_cards(featured))


def category(request: HttpRequest, slug: str) -> HttpResponse:
    cat = next((c for c in CATEGORIES if c.slug == slug), None)
    if cat is None:
        raise Http404("no such category")
    return _page(
        request,
        "listing.html",
        slots=PAGE_SLOTS,
        heading=cat.name,
        blurb=cat.blurb,
        category=cat,
        products=_cards(list(products_in(slug))),
    )


def new_arrivals(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "listing.html",
        slots=PAGE_SLOTS,
        heading="New arrivals",
        blurb="Just in this week.",
        products=_cards(list(reversed(PRODUCTS))[:12]),
    )


def sale(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "listing.html",
        slots=PAGE_SLOTS,
        heading="Sale",
        blurb="Our best prices, while stocks last.",
        products=_cards([p for p in PRODUCTS if p.compare_at]),
    )


def journal(request: HttpRequest) -> HttpResponse:
    return _page(request, "journal.html", slots=PAGE_SLOTS, guides=GUIDES)


def guide(request: HttpRequest, slug: str) -> HttpResponse:
    found = next((g for g in GUIDES if g.slug == slug), None)
    if found is None:
        raise Http404("no such guide")
    return _page(
        request,
        "guide.html",
        slots=PAGE_SLOTS,
        guide=found,
        products=_cards(list(products_in(found.category))[:4]),
    )


def product_page(request: HttpRequest, product_id: str) -> HttpResponse:
    p = product(product_id)
    if p is None:
        raise Http404("no such product")
    cat = next((c for c in CATEGORIES if c.slug == p.category), None)
    return _page(
        request,
        "product.html",
        slots=PRODUCT_SLOTS,
        product=p,
        category=cat,
        props=_json(product_properties(p)),
    )


def product_image(request: HttpRequest, product_id: str) -> HttpResponse:
    """A generated picture (the demo ships no photos and downloads nothing)."""
    p = product(product_id)
    if p is None:
        raise Http404("no such product")
    initials = html.escape("".join(w[0] for w in p.name.split()[:2]).upper())
    label = html.escape(p.name)
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 300" role="img" '
        f'aria-label="{label}"><rect width="400" height="300" fill="{html.escape(p.color)}"/>'
        '<circle cx="320" cy="60" r="90" fill="#ffffff" fill-opacity="0.18"/>'
        '<text x="50%" y="52%" text-anchor="middle" '
        'font-family="Helvetica, Arial, sans-serif" font-size="96" font-weight="700" '
        f'fill="#ffffff" fill-opacity="0.9">{initials}</text></svg>'
    )
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Cache-Control"] = "public, max-age=86400"
    return response


def cart(request: HttpRequest) -> HttpResponse:
    lines = services.cart_lines(request.session)
    return _page(
        request,
        "cart.html",
        slots=PAGE_SLOTS,
        lines=lines,
        total=sum(line.total for line in lines),
        checkout_props=_json(
            {
                "revenue": sum(line.total for line in lines),
                "currency": "EUR",
                "products": [line.product.id for line in lines],
            }
        ),
    )


@require_POST
def cart_add(request: HttpRequest) -> HttpResponse:
    try:
        quantity = int(request.POST.get("quantity", "1"))
    except ValueError:
        quantity = 1
    try:
        services.cart_add(
            request.session, product_id=request.POST.get("product_id", ""), quantity=quantity
        )
    except KeyError as exc:
        raise Http404("no such product") from exc
    return redirect("storefront:cart")


@require_POST
def cart_remove(request: HttpRequest) -> HttpResponse:
    services.cart_remove(request.session, product_id=request.POST.get("product_id", ""))
    return redirect("storefront:cart")


@require_http_methods(["GET", "POST"])
def checkout(request: HttpRequest) -> HttpResponse:
    lines = services.cart_lines(request.session)
    if not lines:
        return redirect("storefront:cart")
    user = request.session.get(services.USER_KEY) or {}
    errors: dict[str, str] = {}
    values = {"email": user.get("email", ""), "name": user.get("name", "")}
    if request.method == "POST":
        values = {k: request.POST.get(k, "").strip() for k in ("email", "name")}
        if "@" not in values["email"]:
            errors["email"] = "Enter an email address."
        if not values["name"]:
            errors["name"] = "Enter your name."
        if not errors:
            services.order_place(request.session, **values)
            return redirect("storefront:order")
    return _page(
        request,
        "checkout.html",
        slots=PAGE_SLOTS,
        lines=lines,
        total=sum(line.total for line in lines),
        values=values,
        errors=errors,
    )


def order(request: HttpRequest) -> HttpResponse:
    placed = request.session.pop(services.ORDER_KEY, None)
    if placed is None:
        return redirect("storefront:home")
    purchase = {k: placed[k] for k in ("order_id", "revenue", "currency", "products")}
    return _page(
        request, "order.html", slots=PAGE_SLOTS, order=placed, purchase_json=_json(purchase)
    )


@require_http_methods(["GET", "POST"])
def login(request: HttpRequest) -> HttpResponse:
    error = ""
    if request.method == "POST":
        email = request.POST.get("email", "").strip().lower()
        if "@" not in email:
            error = "Enter an email address, e.g. shopper-12@example.com."
        else:
            local = email.split("@", 1)[0]
            # Demo shoppers (seed_demo) log in as themselves: shopper-12@example.com → shopper-12.
            user_id = local if local.startswith("shopper-") else f"user-{local}"
            name = request.POST.get("name", "").strip() or local.replace("-", " ").title()
            services.login(request.session, user_id=user_id, email=email, name=name)
            target = request.POST.get("next", "")
            return redirect(target if _local(target) else "storefront:home")
    return _page(request, "login.html", slots=PAGE_SLOTS, error=error)


@require_POST
def logout(request: HttpRequest) -> HttpResponse:
    services.logout(request.session)
    return redirect("storefront:home")
