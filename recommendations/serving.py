"""Answering one request: `GET /recommendations` and the `recommendations` slot strategy
of `/decide`. No database query on a warm request: the models and the catalog are in
process, the visitor's recent and bought items ride in their `/decide` snapshot (one
Redis MGET, shared with `/decide`; from the database when Redis is down).

Strategies (DESIGN.md §4 `strategy`):
- personal: the blend of ranking.py over the visitor's recent items (and the item on
  screen, if given); trending when there is no history (cold start), no
  personalization consent, or the blend falls below popularity on held-out data;
- similar: item-item neighbours of `item`;
- bought_together: items bought with `item`, then its item-item neighbours;
- next: what visitors look at next after `item` (or the visitor's newest item);
- trending: decayed popularity, within `category` when given.
Every list leaves out what the visitor bought, what is out of stock, the anchor item and
`exclude`; is re-ranked for diversity; is filled up from trending when short; and says
for every item why it is there.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from recommendations.ranking import (
    Models,
    Scored,
    blend_scores,
    diversify,
    history_weights,
    neighbours,
    trending_scored,
)
from recommendations.selectors import Catalog, catalog_current
from rules.engine import CompiledSlot, SlotDecision
from segments.conditions import Facts

logger = logging.getLogger(__name__)

STRATEGIES = ("personal", "similar", "bought_together", "next", "trending")
NEEDS_ITEM = ("similar", "bought_together")
MAX_LIMIT = 50


@dataclass(frozen=True)
class Ask:
    strategy: str = "personal"
    limit: int = 10
    item: str | None = None
    category: str | None = None
    diversity: float | None = None
    per_category: int | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Recommended:
    item_id: str
    score: float
    reason: str
    source: str
    because: str | None

    def as_json(self, catalog: Catalog) -> dict[str, Any]:
        out: dict[str, Any] = {
            "item_id": self.item_id,
            "score": round(self.score, 4),
            "reason": self.reason,
            "source": self.source,
        }
        if self.because is not None:
            out["because"] = self.because
        entry = catalog.items.get(self.item_id)
        if entry is not None:
            for name in ("title", "category", "image_url", "url"):
                if getattr(entry, name):
                    out[name] = getattr(entry, name)
            if entry.price is not None:
                out["price"] = entry.price
        return out


@dataclass(frozen=True)
class Answer:
    items: list[Recommended]
    strategy: str  # what actually answered (personal may fall back to trending)
    reason: str
    version: int | None


def _title(models: Models, catalog: Catalog, code: int) -> str:
    item_id = models.item_ids[code]
    entry = catalog.items.get(item_id)
    return entry.title if entry and entry.title else item_id


def _reason(models: Models, catalog: Catalog, c: Scored, category: str | None) -> str:
    if c.source == "trending":
        cat = category or catalog.category(models.item_ids[c.item])
        return f"trending in {cat}" if cat else "trending now"
    t = _title(models, catalog, c.because)
    return {
        "item_item": f"viewed together with {t}",
        "svd": f"liked by people who liked {t}",
        "bought_together": f"frequently bought together with {t}",
        "next_item": f"often viewed next after {t}",
    }[c.source]


def _history(
    models: Models, data: Mapping[str, Any] | None, item: str | None
) -> list[tuple[int, int]]:
    recent = list((data or {}).get("recent") or [])
    if item is not None:
        recent.insert(0, (item, 0))
    out = []
    for item_id, kind in recent:
        code = models.index.get(item_id)
        if code is not None:
            out.append((code, int(kind)))
    return out


def recommend(
    models: Models | None,
    ask: Ask,
    *,
    data: Mapping[str, Any] | None,
    personal: bool,
    catalog: Catalog | None = None,
) -> Answer:
    """The list for one visitor. `data` is their snapshot's history (None: unknown
    visitor); without `personal` (no personalization consent) it is not looked at."""
    if models is None:
        return Answer([], ask.strategy, "no recommendation model is trained yet", None)
    catalog = catalog or catalog_current()
    data = data if personal else None
    purchased = set((data or {}).get("purchased") or [])
    excluded = purchased | set(ask.exclude) | ({ask.item} if ask.item else set())
    ids = models.item_ids

    def allowed(code: int) -> bool:
        item_id = ids[code]
        return (
            item_id not in excluded
            and catalog.available(item_id)
            and (ask.category is None or catalog.category(item_id) == ask.category)
        )

    anchor = models.index.get(ask.item) if ask.item else None
    pool_size = ask.limit * (50 if ask.per_category is not None else 5)
    ranked: list[Scored] = []
    prefiltered = False  # the blend applies `allowed` itself, on its best candidates only
    answered, why = ask.strategy, ""
    if ask.strategy == "personal":
        history = _history(models, data, ask.item)
        if not personal:
            answered, why = "trending", "no personalization consent: trending items"
        elif not history:
            answered, why = "trending", "no history yet (cold start): trending items"
        elif not models.personal_ok:
            answered, why = (
                "trending",
                "the personal model is below popularity on held-out data: trending items",
            )
        else:
            ranked = blend_scores(models, history_weights(history), allowed=allowed, want=pool_size)
            prefiltered = True
            why = f"from {len({c for c, _ in history})} recent item(s)"
    elif ask.strategy in ("similar", "bought_together", "next"):
        if ask.strategy == "next" and anchor is None:
            history = _history(models, data, None)
            anchor = history[0][0] if history else None
        if anchor is None:
            answered = "trending"
            why = (
                f"item {ask.item!r} has no interactions yet (cold start): trending items"
                if ask.item
                else "no item to start from: trending items"
            )
        else:
            name = {"similar": "item_item", "bought_together": "bought_together"}.get(
                ask.strategy, "next_item"
            )
            ranked = neighbours(models, name, anchor)
            if name != "item_item":
                have = {c.item for c in ranked}
                ranked += [c for c in neighbours(models, "item_item", anchor) if c.item not in have]
            why = f"for {_title(models, catalog, anchor)}"
    else:
        why = f"trending in {ask.category}" if ask.category else "trending items"
    diversity = settings.CDP["RECO_DIVERSITY"] if ask.diversity is None else ask.diversity
    categories: dict[int, str] = {}

    def category(code: int) -> str:
        if code not in categories:
            categories[code] = catalog.category(ids[code])
        return categories[code]

    picked = diversify(
        ranked if prefiltered else [c for c in ranked if allowed(c.item)],
        category=category,
        limit=ask.limit,
        diversity=diversity,
        per_category=ask.per_category,
    )
    if len(picked) < ask.limit:  # fill up from trending (all of it for cold start)
        have = {c.item for c in picked}
        fill = trending_scored(
            models, allowed=lambda j: j not in have and allowed(j), wanted=ask.limit * 5
        )
        picked += diversify(
            fill,
            category=category,
            limit=ask.limit - len(picked),
            diversity=diversity,
            per_category=ask.per_category,
            already=picked,
        )
    items = [
        Recommended(
            ids[c.item],
            c.score,
            _reason(models, catalog, c, ask.category),
            c.source,
            ids[c.because] if c.because >= 0 else None,
        )
        for c in picked
    ]
    return Answer(items, answered, why, models.version)


def slot_ask(options: Mapping[str, Any], context: Mapping[str, Any]) -> Ask:
    """A recommendations slot's request: its options, the request context's item and
    category (a product page asks for its own neighbours)."""
    strategy = str(options.get("strategy", "personal"))
    return Ask(
        strategy=strategy if strategy in STRATEGIES else "personal",
        limit=int(options.get("limit", 4)),
        item=context.get("item"),
        category=context.get("category") if options.get("same_category") else None,
        diversity=options.get("diversity"),
        per_category=options.get("per_category"),
    )


OPTIONS = ("strategy", "limit", "diversity", "per_category", "same_category")


def options_problems(options: Mapping[str, Any]) -> dict[str, list[str]]:
    """A recommendations slot's options, checked (field → what it must be)."""
    problems: dict[str, list[str]] = {}
    for name in sorted(set(options) - set(OPTIONS)):
        problems[name] = [f"a known option ({', '.join(OPTIONS)})"]
    strategy = options.get("strategy", "personal")
    if strategy not in STRATEGIES:
        problems["strategy"] = [f"one of {', '.join(STRATEGIES)}"]
    limit = options.get("limit", 4)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        problems["limit"] = [f"a whole number from 1 to {MAX_LIMIT}"]
    diversity = options.get("diversity", 0.0)
    if (
        isinstance(diversity, bool)
        or not isinstance(diversity, int | float)
        or not 0.0 <= float(diversity) <= 1.0
    ):
        problems["diversity"] = ["a number from 0 to 1"]
    cap = options.get("per_category")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        problems["per_category"] = ["a whole number of at least 1"]
    if not isinstance(options.get("same_category", False), bool):
        problems["same_category"] = ["true or false"]
    return problems


def slot_strategy(
    models: Models | None,
    data: Mapping[str, Any] | None,
    slot: CompiledSlot,
    facts: Facts,
    now: datetime,
    visitor: str,
    personal: bool,
) -> SlotDecision | None:
    """A `recommendations` slot's answer: the slot's default variant's content with
    `items` added; None (the default answers) when there is nothing to recommend. A
    product page passes context.item; a slot of strategy similar/bought_together
    without one answers from trending."""
    ask = slot_ask(slot.options, facts.context)
    answer = recommend(models, ask, data=data, personal=personal)
    if not answer.items:
        return None
    catalog = catalog_current()
    content = dict(slot.variants.get(slot.default_variant, {})) if slot.default_variant else {}
    content["items"] = [r.as_json(catalog) for r in answer.items]
    return SlotDecision(
        slot.key,
        slot.default_variant,
        content,
        "recommendation",
        f"recommendations ({answer.strategy}, model v{answer.version}): {answer.reason}; "
        f"first: {answer.items[0].reason}",
    )
