"""Reads of the demo storefront: the default content of its slots (what a visitor sees
before, or without, a decision) and what each page tells the SDK."""

from __future__ import annotations

from typing import Any

from rules.models import Slot


def slot_defaults(keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each slot's default variant content, by slot key (empty for an unknown slot), so
    the page renders something true before `/decide` answers — and when it may not."""
    out: dict[str, dict[str, Any]] = {key: {} for key in keys}
    for slot in Slot.objects.filter(key__in=keys).select_related("default_variant"):
        if slot.default_variant is not None:
            out[slot.key] = slot.default_variant.content()
    return out
