"""Writes of the demo storefront: its source and key, the session cart, orders."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction

from profiles.demo import demo_source_ensure
from profiles.services import SourceKeys, source_keys_rotate
from storefront.catalog import Product, product
from storefront.models import ShopConfig

CART_KEY = "storefront_cart"
ORDER_KEY = "storefront_order"
USER_KEY = "storefront_user"
IDENTIFY_KEY = "storefront_identify_pending"
LOGOUT_KEY = "storefront_logout_pending"
MAX_QUANTITY = 20


@transaction.atomic
def shop_config_ensure(*, keys: SourceKeys | None = None) -> tuple[ShopConfig, SourceKeys | None]:
    """The storefront's source and write key, made once. `keys` are the demo source's keys
    when the caller has just created it; without them, a demo source made elsewhere gets
    new keys (its raw write key was shown once and not kept). Returns the new keys when
    any were made, so the caller can show the secret key once."""
    config = ShopConfig.objects.select_related("source").first()
    if config is not None:
        return config, None
    made: SourceKeys | None = keys
    if made is None:
        source, made = demo_source_ensure()
        if made is None:
            made = source_keys_rotate(source=source)
    config = ShopConfig.objects.create(source=made.source, write_key=made.write_key)
    return config, made


@dataclass(frozen=True)
class CartLine:
    product: Product
    quantity: int

    @property
    def total(self) -> int:
        return self.product.price * self.quantity


def cart_lines(session: SessionBase) -> list[CartLine]:
    lines = []
    for pid, qty in (session.get(CART_KEY) or {}).items():
        p = product(pid)
        if p is not None and qty > 0:
            lines.append(CartLine(p, int(qty)))
    return lines


def cart_add(session: SessionBase, *, product_id: str, quantity: int = 1) -> CartLine:
    p = product(product_id)
    if p is None:
        raise KeyError(product_id)
    cart = dict(session.get(CART_KEY) or {})
    cart[p.id] = max(1, min(MAX_QUANTITY, int(cart.get(p.id, 0)) + quantity))
    session[CART_KEY] = cart
    return CartLine(p, cart[p.id])


def cart_remove(session: SessionBase, *, product_id: str) -> None:
    cart = dict(session.get(CART_KEY) or {})
    cart.pop(product_id, None)
    session[CART_KEY] = cart


def order_place(session: SessionBase, *, email: str, name: str) -> dict[str, Any]:
    """Turn the cart into an order (kept in the session for the confirmation page)."""
    lines = cart_lines(session)
    if not lines:
        raise ValueError("the cart is empty")
    order = {
        "order_id": "ord-" + secrets.token_hex(6),
        "email": email,
        "name": name,
        "revenue": sum(line.total for line in lines),
        "currency": "EUR",
        "products": [
            {
                "product_id": line.product.id,
                "name": line.product.name,
                "category": line.product.category,
                "price": line.product.price,
                "quantity": line.quantity,
            }
            for line in lines
        ],
    }
    session[CART_KEY] = {}
    session[ORDER_KEY] = order
    return order


def login(session: SessionBase, *, user_id: str, email: str, name: str) -> None:
    session[USER_KEY] = {"user_id": user_id, "email": email, "name": name}
    session[IDENTIFY_KEY] = True


def logout(session: SessionBase) -> None:
    session.pop(USER_KEY, None)
    session.pop(IDENTIFY_KEY, None)
    session[LOGOUT_KEY] = True
