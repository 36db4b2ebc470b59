"""Offline evaluation on a time-based split: the models are fitted on the interactions
before the split time and asked, for each visitor active on both sides, for the items
that visitor went on to touch after it (and had not touched before). Measures per
cut-off k: recall@k (the share of those items in the top k), NDCG@k (binary relevance,
so a hit near the top counts more) and hit rate@k (visitors with at least one hit).

Every model answers the same visitors the way it would online (ranking.py): the
popularity baseline, trending, item-item alone, the factorized model (PureSVD) alone,
bought together, next item, and the personal blend that `/recommendations` serves —
whose item part is the factorized model only where it beat item-item here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from recommendations.algorithms import Interactions, csr_topk
from recommendations.ranking import Models, blend_matrix, history_weights

KS = (1, 5, 10, 20)
MAX_USERS = 5000
COMPARED = (
    "popularity",
    "trending",
    "item_item",
    "svd",
    "bought_together",
    "next_item",
    "personal",
)


@dataclass(frozen=True)
class Split:
    train: Interactions
    test: Interactions
    at: float  # epoch seconds


def time_split(inter: Interactions, *, holdout_fraction: float) -> Split:
    """The last `holdout_fraction` of the interactions (by time) are held out."""
    at = float(np.quantile(inter.ts, 1 - holdout_fraction)) if len(inter) else 0.0
    return Split(inter.where(inter.ts < at), inter.where(inter.ts >= at), at)


@dataclass(frozen=True)
class Task:
    """The visitors to answer: their train history and the new items they went on to."""

    users: np.ndarray
    histories: list[list[tuple[int, float, int]]]
    targets: list[set[int]]


def task_build(split: Split, *, max_users: int = MAX_USERS, seed: int = 0) -> Task:
    train, test = split.train, split.test
    order = np.lexsort((-train.ts, train.users))  # per user, newest first
    tu, ti, tk = train.users[order], train.items[order], train.kinds[order]
    starts = np.searchsorted(tu, np.arange(train.n_users + 1))
    future: dict[int, set[int]] = {}
    for u, i in zip(test.users.tolist(), test.items.tolist(), strict=True):
        future.setdefault(u, set()).add(i)
    users, histories, targets = [], [], []
    for u in sorted(future):
        a, b = starts[u], starts[u + 1]
        if a == b:
            continue  # no history before the split: a cold-start visitor, not scored
        hist = history_weights(list(zip(ti[a:b].tolist(), tk[a:b].tolist(), strict=True)))
        known = set(ti[a:b].tolist())
        target = future[u] - known
        if target:
            users.append(u)
            histories.append(hist)
            targets.append(target)
    if len(users) > max_users:
        pick = np.sort(np.random.default_rng(seed).choice(len(users), max_users, replace=False))
        users = [users[p] for p in pick]
        histories = [histories[p] for p in pick]
        targets = [targets[p] for p in pick]
    return Task(np.asarray(users, np.int64), histories, targets)


def _metrics(ranked: list[list[int]], targets: list[set[int]]) -> dict[str, list[float]]:
    discounts = 1.0 / np.log2(np.arange(2, max(KS) + 2))
    out: dict[str, list[float]] = {"recall": [], "ndcg": [], "hit_rate": []}
    for k in KS:
        recall = ndcg = hits = 0.0
        for items, target in zip(ranked, targets, strict=True):
            got = [1.0 if j in target else 0.0 for j in items[:k]]
            n_hit = sum(got)
            recall += n_hit / len(target)
            hits += 1.0 if n_hit else 0.0
            ideal = discounts[: min(len(target), k)].sum()
            ndcg += float(np.dot(got, discounts[: len(got)])) / ideal
        n = max(len(targets), 1)
        out["recall"].append(round(float(recall) / n, 5))
        out["ndcg"].append(round(float(ndcg) / n, 5))
        out["hit_rate"].append(round(float(hits) / n, 5))
    return out


def _by_order(order: np.ndarray, task: Task, k: int) -> list[list[int]]:
    """The first k items of a global order that each visitor has not touched."""
    head = order[: k + 64].tolist()
    out = []
    for hist in task.histories:
        seen = {item for item, _, _ in hist}
        picks = [j for j in head if j not in seen][:k]
        if len(picks) < k:  # a long history: scan further
            picks = [j for j in order.tolist() if j not in seen][:k]
        out.append(picks)
    return out


def _by_matrix(
    scores: sparse.csr_matrix, k: int, pad: Callable[[int, list[int]], list[int]] | None
) -> list[list[int]]:
    top = csr_topk(scores, k)
    out = []
    for r in range(scores.shape[0]):
        items = top.row(r)[0].tolist()
        out.append(pad(r, items) if pad is not None else items)
    return out


def evaluate(models: Models, split: Split, *, max_users: int = MAX_USERS) -> dict[str, object]:
    """Metrics of every compared model on the held-out visitors (models fitted on
    split.train only)."""
    task = task_build(split, max_users=max_users)
    k = max(KS)
    result: dict[str, object] = {"k": list(KS), "users": len(task.users), "models": {}}
    if not len(task.users):
        return result
    pop_order = np.lexsort((np.arange(len(models.popularity)), -models.popularity))
    pop_order = pop_order[models.popularity[pop_order] > 0]
    ranked: dict[str, list[list[int]]] = {
        "popularity": _by_order(pop_order, task, k),
        "trending": _by_order(models.trending_order, task, k),
    }
    trending_lists = ranked["trending"]

    def pad(r: int, items: list[int]) -> list[int]:
        have = set(items)
        return items + [j for j in trending_lists[r] if j not in have][: k - len(items)]

    for name in ("item_item", "svd"):
        alone = dataclasses.replace(models, item_model=name)
        ranked[name] = _by_matrix(
            blend_matrix(alone, task.histories, parts=("item_item",)), k, None
        )
    for name in ("bought_together", "next_item"):
        ranked[name] = _by_matrix(blend_matrix(models, task.histories, parts=(name,)), k, None)
    # the blend's item part: the factorized model only where it beats item-item
    scores = {name: _metrics(ranked[name], task.targets) for name in ranked}
    recall10 = {n: scores[n]["recall"][KS.index(10)] for n in ("item_item", "svd")}
    item_model = (
        "svd" if models.svd is not None and recall10["svd"] > recall10["item_item"] else "item_item"
    )
    chosen = dataclasses.replace(models, item_model=item_model)
    ranked["personal"] = _by_matrix(blend_matrix(chosen, task.histories), k, pad)
    scores["personal"] = _metrics(ranked["personal"], task.targets)
    result["models"] = {name: scores[name] for name in COMPARED}
    result["item_model"] = item_model
    return result


def at_k(metrics: dict[str, object], model: str, measure: str = "recall", k: int = 10) -> float:
    """One figure of an evaluation (0.0 when it was not measured)."""
    ks = list(metrics.get("k") or [])  # type: ignore[call-overload]
    models = metrics.get("models") or {}
    if k not in ks or model not in models:  # type: ignore[operator]
        return 0.0
    return float(models[model][measure][ks.index(k)])  # type: ignore[index]
