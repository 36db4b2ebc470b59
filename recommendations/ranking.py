"""Scoring candidates for a visitor, the same arithmetic offline (evaluation, a matrix
of users at once) and online (one request): no I/O here.

A visitor's history is their most recent distinct items, newest first, each weighted by
what they did with it (view < cart add < purchase) and by recency rank (RECENCY ** rank).
The personal blend of an item c is

    item_item × Σ_h w_h · sim(h, c)                 (every history item; sim is item-item,
                                                      or PureSVD where it did better)
  + bought_together × Σ_h w_h · fbt(h, c)           (items carted or bought)
  + next_item × P(c | the newest item)

with the blend weights of the version's parameters; history items are never
recommended back, and when the blend has too few candidates the list is filled from
trending. Diversity re-ranking (maximal marginal relevance over categories, and an
optional hard cap per category) comes last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from recommendations.algorithms import KIND_CART, TopK

HISTORY = 20
RECENCY = 0.85
KIND_HISTORY_WEIGHT = (1.0, 2.0, 3.0)  # view, cart, purchase
DEFAULT_BLEND = {"item_item": 1.0, "bought_together": 0.5, "next_item": 0.5}


@dataclass(frozen=True)
class Models:
    """One trained version, ready to score."""

    version: int
    item_ids: list[str]
    item_item: TopK
    bought_together: TopK
    next_item: TopK
    trending: np.ndarray
    popularity: np.ndarray
    svd: TopK | None = None
    # The item part of the personal blend: item_item, or svd where it did better on
    # held-out data.
    item_model: str = "item_item"
    blend: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BLEND))
    # Is the personal blend at least as good as popularity on held-out data? If not,
    # personal requests are answered from trending.
    personal_ok: bool = True
    index: dict[str, int] = field(default_factory=dict)
    trending_order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        if not self.index:
            self.index.update({item: i for i, item in enumerate(self.item_ids)})
        if len(self.trending_order) == 0 and len(self.trending):
            order = np.lexsort((np.arange(len(self.trending)), -self.trending))
            object.__setattr__(self, "trending_order", order[self.trending[order] > 0])

    def model(self, name: str) -> TopK:
        if name == "svd":
            return self.svd if self.svd is not None else TopK.empty(len(self.item_ids))
        return {
            "item_item": self.item_item,
            "bought_together": self.bought_together,
            "next_item": self.next_item,
        }[name]


@dataclass(frozen=True)
class Scored:
    item: int
    score: float
    source: str  # item_item / svd / bought_together / next_item / trending
    because: int = -1  # the history (or anchor) item that contributed most


def history_weights(history: Sequence[tuple[int, int]]) -> list[tuple[int, float, int]]:
    """(item, kind) newest first → the HISTORY most recent distinct items as
    (item, weight, strongest kind)."""
    kinds: dict[int, int] = {}
    for item, kind in history:
        if item in kinds:
            kinds[item] = max(kinds[item], kind)
        elif len(kinds) < HISTORY:
            kinds[item] = kind
    return [
        (item, KIND_HISTORY_WEIGHT[kind] * RECENCY**rank, kind)
        for rank, (item, kind) in enumerate(kinds.items())
    ]


SOURCES = ("item_item", "svd", "bought_together", "next_item")


def blend_scores(
    models: Models,
    weighted: list[tuple[int, float, int]],
    *,
    allowed: Callable[[int], bool] | None = None,
    want: int | None = None,
) -> list[Scored]:
    """One visitor's blend, best first (ties by item), history items left out; only
    items `allowed` lets through, and at most `want` of them (all by default). Summed
    with numpy over the neighbour lists of the history (≤ 20 × 3 rows)."""
    rows_i: list[np.ndarray] = []
    rows_v: list[np.ndarray] = []
    anchors: list[int] = []
    sources: list[int] = []
    lengths: list[int] = []

    def add(name: str, anchor: int, weight: float) -> None:
        idx, scores = models.model(name).row(anchor)
        if len(idx):
            rows_i.append(idx)
            rows_v.append(scores * np.float32(weight))
            anchors.append(anchor)
            sources.append(SOURCES.index(name))
            lengths.append(len(idx))

    b = models.blend
    for item, w, kind in weighted:
        if b.get("item_item"):
            add(models.item_model, item, b["item_item"] * w)
        if b.get("bought_together") and kind >= KIND_CART:
            add("bought_together", item, b["bought_together"] * w)
    if weighted and b.get("next_item"):
        add("next_item", weighted[0][0], b["next_item"])
    if not rows_i:
        return []
    idx = np.concatenate(rows_i)
    val = np.concatenate(rows_v).astype(np.float64)
    anchor = np.repeat(np.asarray(anchors), lengths)
    source = np.repeat(np.asarray(sources), lengths)
    items, inv = np.unique(idx, return_inverse=True)
    total = np.bincount(inv, weights=val, minlength=len(items))
    # the strongest single contribution of each candidate names its reason
    order = np.lexsort((-val, inv))
    firsts = order[np.concatenate(([0], np.flatnonzero(np.diff(inv[order])) + 1))]
    seen = np.asarray([item for item, _, _ in weighted])
    keep = (total > 0) & ~np.isin(items, seen)
    ranked = np.flatnonzero(keep)
    ranked = ranked[np.lexsort((items[ranked], -total[ranked]))]
    out: list[Scored] = []
    for r in ranked.tolist():
        j = int(items[r])
        if allowed is not None and not allowed(j):
            continue
        f = firsts[r]
        out.append(Scored(j, float(total[r]), SOURCES[source[f]], int(anchor[f])))
        if want is not None and len(out) >= want:
            break
    return out


def neighbours(models: Models, name: str, anchor: int) -> list[Scored]:
    idx, scores = models.model(name).row(anchor)
    return [Scored(j, s, name, anchor) for j, s in zip(idx.tolist(), scores.tolist(), strict=True)]


def trending_scored(
    models: Models, *, allowed: Callable[[int], bool], wanted: int, scan: int = 5000
) -> list[Scored]:
    """The most trending items that `allowed` lets through (scanning at most `scan`)."""
    out: list[Scored] = []
    for j in models.trending_order[:scan].tolist():
        if allowed(j):
            out.append(Scored(j, float(models.trending[j]), "trending"))
            if len(out) >= wanted:
                break
    return out


def diversify(
    ranked: Sequence[Scored],
    *,
    category: Callable[[int], str],
    limit: int,
    diversity: float,
    per_category: int | None = None,
    already: Sequence[Scored] = (),
) -> list[Scored]:
    """Maximal marginal relevance: repeatedly take the candidate with the best
    (1 − diversity) × relevance − diversity × (share of the picks in its category),
    relevance scaled to [0, 1] (ties: the better ranked); at most `per_category` items
    of one category. `already` are picks made before (they count for the shares and
    the cap; they are not returned). Within a category the penalty is the same, so only
    each category's best remaining candidate competes: limit × categories steps."""
    # with a hard cap, look further down: the next category may start far below
    pool = list(ranked[: limit * (50 if per_category is not None else 5)])
    if not pool:
        return []
    top = max(c.score for c in pool) or 1.0
    queues: dict[str, list[tuple[int, Scored]]] = {}
    for pos, c in enumerate(pool):
        queues.setdefault(category(c.item), []).append((pos, c))
    heads = dict.fromkeys(queues, 0)
    counts: dict[str, int] = {}
    for c in already:
        counts[category(c.item)] = counts.get(category(c.item), 0) + 1
    n = len(already)
    picked: list[Scored] = []
    while len(picked) < limit:
        best: tuple[float, int, str] | None = None
        for cat, queue in queues.items():
            h = heads[cat]
            if h >= len(queue):
                continue
            if per_category is not None and counts.get(cat, 0) >= per_category:
                continue
            pos, c = queue[h]
            overlap = counts.get(cat, 0) / n if n and cat else 0.0
            value = (1 - diversity) * (c.score / top) - diversity * overlap
            if best is None or value > best[0] or (value == best[0] and pos < best[1]):
                best = (value, pos, cat)
        if best is None:
            break
        cat = best[2]
        picked.append(queues[cat][heads[cat]][1])
        heads[cat] += 1
        counts[cat] = counts.get(cat, 0) + 1
        n += 1
    return picked


# --- Offline: many visitors at once -----------------------------------------------------


def history_matrices(
    histories: Sequence[list[tuple[int, float, int]]], n_items: int
) -> tuple[sparse.csr_matrix, sparse.csr_matrix, sparse.csr_matrix]:
    """(all history weights, cart/purchase history weights, newest item one-hot) as
    visitors × items matrices."""
    rows, cols, vals, strong, last = [], [], [], [], []
    for r, hist in enumerate(histories):
        for item, w, kind in hist:
            rows.append(r)
            cols.append(item)
            vals.append(w)
            strong.append(w if kind >= KIND_CART else 0.0)
        last.append(hist[0][0] if hist else -1)
    shape = (len(histories), n_items)
    h = sparse.csr_matrix((vals, (rows, cols)), shape=shape, dtype=np.float32)
    s = sparse.csr_matrix((strong, (rows, cols)), shape=shape, dtype=np.float32)
    s.eliminate_zeros()
    lr = [r for r, j in enumerate(last) if j >= 0]
    one = sparse.csr_matrix(
        (np.ones(len(lr), np.float32), (lr, [last[r] for r in lr])), shape=shape
    )
    return h, s, one


def blend_matrix(
    models: Models,
    histories: Sequence[list[tuple[int, float, int]]],
    *,
    parts: Iterable[str] = ("item_item", "bought_together", "next_item"),
) -> sparse.csr_matrix:
    """Every visitor's blend scores (visitors × items), history items removed: the
    matrix form of blend_scores (the same sums)."""
    n = len(models.item_ids)
    h, s, one = history_matrices(histories, n)
    b = models.blend
    out = sparse.csr_matrix((len(histories), n), dtype=np.float32)
    parts = set(parts)
    if "item_item" in parts and b.get("item_item"):
        out = out + (h @ models.model(models.item_model).matrix()) * b["item_item"]
    if "bought_together" in parts and b.get("bought_together"):
        out = out + (s @ models.bought_together.matrix()) * b["bought_together"]
    if "next_item" in parts and b.get("next_item"):
        out = out + (one @ models.next_item.matrix()) * b["next_item"]
    out = sparse.csr_matrix(out)
    seen = h.copy()
    seen.data[:] = 1.0
    out = out - out.multiply(seen)
    out = sparse.csr_matrix(out)
    out.eliminate_zeros()
    return out
