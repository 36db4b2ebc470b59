"""The models as array arithmetic, and their offline evaluation: no database.

Top-k neighbour lists are compared with brute-force dense computations on small random
matrices (hypothesis draws the seeds and shapes); the models' rules (sessions, baskets,
decay, weights) are pinned on hand-built interactions; the evaluation shows on planted
bundles that the learned models find what popularity cannot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

from recommendations.algorithms import (
    DAY,
    KIND_CART,
    KIND_PURCHASE,
    KIND_VIEW,
    Interactions,
    TopK,
    bought_together,
    cosine_topk,
    csr_topk,
    item_item,
    next_item,
    popularity,
    sessions_of,
    trending,
)
from recommendations.evaluation import KS, Split, at_k, evaluate, task_build, time_split
from recommendations.ranking import Models
from recommendations.services import models_fit, params_current
from tests.recommendations.planted import NOW, Planted, planted

PROPERTY = settings(max_examples=150, deadline=None)
MINUTE = 60.0
T = NOW.timestamp()
GAP = 30 * MINUTE


def interactions(
    rows: list[tuple[int, int, float, int]], *, users: int, items: int
) -> Interactions:
    """Interactions from (user, item, epoch seconds, kind) rows."""
    u, i, t, k = zip(*rows, strict=True)
    return Interactions(
        np.asarray(u, np.int32),
        np.asarray(i, np.int32),
        np.asarray(t, np.float64),
        np.asarray(k, np.int8),
        [f"u{n}" for n in range(users)],
        [f"sku-{n}" for n in range(items)],
    )


def neighbour_list(top: TopK, item: int) -> list[int]:
    return top.row(item)[0].tolist()


def score_of(top: TopK, item: int, other: int) -> float:
    idx, scores = top.row(item)
    hits = scores[idx == other]
    return float(hits[0]) if len(hits) else 0.0


def random_matrix(seed: int, rows: int, cols: int, density: float) -> sparse.csr_matrix:
    """Non-negative, values spread out so that cosine ties are (almost surely) absent."""
    rng = np.random.default_rng(seed)
    m = sparse.random(rows, cols, density=density, random_state=rng, dtype=np.float64)
    m.data = 0.1 + m.data
    return m.tocsr().astype(np.float32)


def dense_cosine(x: sparse.csr_matrix, shrink: float) -> np.ndarray:
    d = x.toarray().astype(np.float64)
    norms = np.sqrt((d * d).sum(axis=0))
    denominator = np.outer(norms, norms) + shrink
    cos = np.divide(d.T @ d, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    np.fill_diagonal(cos, 0.0)
    return cos


def dense_support(x: sparse.csr_matrix) -> np.ndarray:
    b = (x.toarray() != 0).astype(np.int64)
    return b.T @ b


# --- csr_topk -------------------------------------------------------------------------


def test_csr_topk_keeps_the_best_positive_entries_best_first_ties_by_column() -> None:
    # given a row with a tie (3 at columns 1 and 3), a zero and a negative entry
    m = sparse.csr_matrix(np.array([[0, 3, 5, 3, -1, 2], [0, 0, 0, 0, 0, 0]], np.float32))
    # when
    top2, top9 = csr_topk(m, 2), csr_topk(m, 9)
    # then the best come first, the lower column wins a tie, k cuts the list
    assert neighbour_list(top2, 0) == [2, 1]
    assert top2.row(0)[1].tolist() == [5.0, 3.0]
    assert neighbour_list(top9, 0) == [2, 1, 3, 5]  # no zero, no negative
    assert neighbour_list(top9, 1) == []
    assert top9.n_items == 2


def test_csr_topk_drops_the_diagonal_of_a_block_that_starts_further_down() -> None:
    # given rows 2 and 3 of an item × item matrix (row0 = 2), with their diagonal set
    m = sparse.csr_matrix(np.array([[1, 0, 9, 2], [0, 4, 0, 9]], np.float32))
    # when
    top = csr_topk(m, 5, drop_diagonal=True, row0=2)
    # then item 2 is not its own neighbour, nor item 3
    assert neighbour_list(top, 0) == [3, 0]
    assert neighbour_list(top, 1) == [1]


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    k=st.integers(1, 6),
    drop_diagonal=st.booleans(),
    row0=st.integers(0, 4),
)
def test_csr_topk_matches_a_brute_force_sort(
    seed: int, rows: int, cols: int, k: int, drop_diagonal: bool, row0: int
) -> None:
    # given small integer values (many ties), negatives and duplicate coordinates
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, rows * cols * 2))
    r, c = rng.integers(0, rows, n), rng.integers(0, cols, n)
    v = rng.integers(-2, 4, n).astype(np.float32)
    m = sparse.coo_matrix((v, (r, c)), shape=(rows, cols)).tocsr()
    dense = m.toarray()
    # when
    top = csr_topk(m, k, drop_diagonal=drop_diagonal, row0=row0)
    # then every row is its k largest positive entries, ties by column
    assert top.n_items == rows
    for i in range(rows):
        expected = sorted(
            (-dense[i, j], j)
            for j in range(cols)
            if dense[i, j] > 0 and not (drop_diagonal and j == i + row0)
        )[:k]
        idx, scores = top.row(i)
        assert idx.tolist() == [j for _, j in expected]
        assert scores.tolist() == [-s for s, _ in expected]


# --- cosine_topk ----------------------------------------------------------------------


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
    cols=st.integers(1, 15),
    density=st.floats(0.05, 0.6),
    k=st.integers(1, 16),
    shrink=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_cosine_topk_matches_a_dense_cosine_with_shrink(
    seed: int, rows: int, cols: int, density: float, k: int, shrink: float
) -> None:
    # given a small random user × item matrix
    x = random_matrix(seed, rows, cols, density)
    expected = dense_cosine(x, shrink)
    # when
    top = cosine_topk(x, k, shrink=shrink)
    # then each item's list is its k most similar other items, best first
    for i in range(cols):
        idx, scores = top.row(i)
        best = np.sort(expected[i][expected[i] > 0])[::-1][:k]
        assert len(idx) == len(best)
        assert scores == pytest.approx(best, rel=1e-5)
        assert scores.tolist() == sorted(scores.tolist(), reverse=True)
        assert [float(expected[i, j]) for j in idx] == pytest.approx(scores, rel=1e-5)
        assert i not in idx.tolist()


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
    cols=st.integers(1, 15),
    k=st.integers(1, 8),
    min_support=st.integers(1, 3),
)
def test_cosine_topk_does_not_depend_on_the_block_size(
    seed: int, rows: int, cols: int, k: int, min_support: int
) -> None:
    # given
    x = random_matrix(seed, rows, cols, 0.3)
    # when computed 3 items at a time and all at once
    small = cosine_topk(x, k, shrink=1.0, min_support=min_support, block=3)
    whole = cosine_topk(x, k, shrink=1.0, min_support=min_support, block=2048)
    # then the neighbour lists are the same
    assert small.indptr.tolist() == whole.indptr.tolist()
    assert small.indices.tolist() == whole.indices.tolist()
    assert small.scores.tolist() == whole.scores.tolist()


def test_cosine_topk_min_support_drops_pairs_seen_together_too_rarely() -> None:
    # given items 0 and 1 together in two baskets, 0 and 2 together in one
    x = sparse.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1], [0, 0, 1]], np.float32))
    # when
    loose = cosine_topk(x, 5, min_support=1)
    strict = cosine_topk(x, 5, min_support=2)
    # then only the pair seen together twice survives the minimum support
    assert neighbour_list(loose, 0) == [1, 2]
    assert neighbour_list(strict, 0) == [1]
    assert neighbour_list(strict, 1) == [0]
    assert neighbour_list(strict, 2) == []


@PROPERTY
@given(
    seed=st.integers(0, 2**32 - 1),
    rows=st.integers(1, 40),
    cols=st.integers(1, 15),
    min_support=st.integers(2, 4),
    block=st.sampled_from([2, 5, 2048]),
)
def test_cosine_topk_keeps_exactly_the_pairs_with_enough_support(
    seed: int, rows: int, cols: int, min_support: int, block: int
) -> None:
    # given
    x = random_matrix(seed, rows, cols, 0.4)
    support = dense_support(x)
    # when every neighbour fits in the lists
    top = cosine_topk(x, cols, shrink=1.0, min_support=min_support, block=block)
    # then the neighbours are the pairs sharing at least min_support rows
    for i in range(cols):
        expected = {j for j in range(cols) if j != i and support[i, j] >= min_support}
        assert set(neighbour_list(top, i)) == expected


def test_cosine_topk_keeps_only_k_neighbours_per_item() -> None:
    # given 60 items that every one of 300 users touches about half of
    x = random_matrix(11, 300, 60, 0.5)
    k = 7
    # when
    top = cosine_topk(x, k, block=16)
    # then memory is k per item, never items × items, and no item is its own neighbour
    assert top.n_items == 60
    assert top.nnz <= 60 * k
    for i in range(60):
        idx, _ = top.row(i)
        assert len(idx) == k
        assert i not in idx.tolist()


# --- item-item ------------------------------------------------------------------------


def test_item_item_counts_an_old_co_view_less_than_a_recent_one() -> None:
    # given item 0 viewed with item 1 today, and with item 2 ninety days ago
    old = T - 90 * DAY
    inter = interactions(
        [
            (0, 0, T, KIND_VIEW),
            (0, 1, T, KIND_VIEW),
            (1, 0, old, KIND_VIEW),
            (1, 2, old, KIND_VIEW),
        ],
        users=2,
        items=3,
    )
    fit: dict[str, Any] = {"now": T, "k": 5, "weights": (1.0, 3.0, 5.0), "shrink": 0.0}
    # when
    decaying = item_item(inter, half_life_days=30.0, **fit)
    lasting = item_item(inter, half_life_days=1e9, **fit)
    # then the recent co-view ranks first, because of the decay alone
    assert neighbour_list(decaying, 0) == [1, 2]
    assert score_of(decaying, 0, 1) > 2 * score_of(decaying, 0, 2)
    assert score_of(lasting, 0, 1) == pytest.approx(score_of(lasting, 0, 2))


def test_item_item_weighs_purchases_more_than_views() -> None:
    # given item 0 viewed with item 1 by one shopper, bought with item 2 by another
    inter = interactions(
        [
            (0, 0, T, KIND_VIEW),
            (0, 1, T, KIND_VIEW),
            (1, 0, T, KIND_PURCHASE),
            (1, 2, T, KIND_PURCHASE),
        ],
        users=2,
        items=3,
    )
    fit: dict[str, Any] = {"now": T, "k": 5, "half_life_days": 30.0, "shrink": 2.0}
    # when
    weighted = item_item(inter, weights=(1.0, 3.0, 5.0), **fit)
    flat = item_item(inter, weights=(1.0, 1.0, 1.0), **fit)
    # then the purchase pair is the closer one
    assert neighbour_list(weighted, 0) == [2, 1]
    assert score_of(weighted, 0, 2) > score_of(weighted, 0, 1)
    assert score_of(flat, 0, 2) == pytest.approx(score_of(flat, 0, 1))


def test_item_item_shrink_discounts_pairs_seen_by_few_users() -> None:
    # given items 0 and 1 seen together by one user, items 2 and 3 by ten
    rows = [(0, 0, T, KIND_VIEW), (0, 1, T, KIND_VIEW)]
    rows += [(u, item, T, KIND_VIEW) for u in range(1, 11) for item in (2, 3)]
    inter = interactions(rows, users=11, items=4)
    fit: dict[str, Any] = {"now": T, "k": 5, "half_life_days": 30.0, "weights": (1, 3, 5)}
    # when
    plain = item_item(inter, shrink=0.0, **fit)
    shrunk = item_item(inter, shrink=2.0, **fit)
    # then both pairs are perfectly similar, but the rarely seen one is shrunk more
    assert score_of(plain, 0, 1) == pytest.approx(1.0)
    assert score_of(plain, 2, 3) == pytest.approx(1.0)
    assert score_of(shrunk, 0, 1) < score_of(shrunk, 2, 3) < 1.0


# --- sessions, bought together, next item ---------------------------------------------


def test_sessions_of_starts_a_new_session_after_a_gap_or_another_user() -> None:
    # given (unsorted) one user's interactions 10 min, then 31 min apart, and another user
    inter = interactions(
        [
            (0, 2, T + 41 * MINUTE, KIND_VIEW),
            (0, 0, T, KIND_VIEW),
            (1, 3, T + 5 * MINUTE, KIND_VIEW),
            (0, 1, T + 10 * MINUTE, KIND_VIEW),
        ],
        users=2,
        items=4,
    )
    # when
    order, session = sessions_of(inter, GAP)
    # then in user and time order: [0, 1] one session, [2] the next, user 1 its own
    assert inter.items[order].tolist() == [0, 1, 2, 3]
    assert session.tolist() == [0, 0, 1, 2]


def test_bought_together_baskets_are_the_cart_adds_and_purchases_of_one_session() -> None:
    # given
    inter = interactions(
        [
            # shopper 0 carts 0 and 1 and buys 2 in one visit, only views 3 in it
            (0, 0, T, KIND_CART),
            (0, 3, T + 1 * MINUTE, KIND_VIEW),
            (0, 1, T + 2 * MINUTE, KIND_CART),
            (0, 2, T + 3 * MINUTE, KIND_PURCHASE),
            # ... and carts 4 alone in a visit two days later
            (0, 4, T + 2 * DAY, KIND_CART),
            # shopper 1 carts 0 and 1, then 5 two hours later (another visit)
            (1, 0, T, KIND_CART),
            (1, 1, T + 1 * MINUTE, KIND_CART),
            (1, 5, T + 120 * MINUTE, KIND_CART),
            # shopper 2 carts 6 at the same moment as shopper 0's visit
            (2, 6, T + 1 * MINUTE, KIND_CART),
        ],
        users=3,
        items=7,
    )
    # when
    top, baskets = bought_together(inter, k=10, gap_seconds=GAP, min_support=1, shrink=0.0)
    strict, _ = bought_together(inter, k=10, gap_seconds=GAP, min_support=2, shrink=0.0)
    # then two baskets: {0, 1, 2} and {0, 1}; views, other visits and other shoppers
    # stay out, a one-item basket makes no pair
    assert baskets == 2
    assert neighbour_list(top, 0) == [1, 2]
    assert neighbour_list(top, 2) == [0, 1]
    for alone in (3, 4, 5, 6):
        assert neighbour_list(top, alone) == []
    # and with a minimum support of 2 baskets only 0 and 1 remain together
    assert neighbour_list(strict, 0) == [1]
    assert neighbour_list(strict, 2) == []


def test_bought_together_uses_the_session_of_every_interaction_not_only_of_cart_adds() -> None:
    # given a visit, by the session rule: cart add of 0, views every 10 minutes, and a
    # cart add of 1 forty minutes after the first (each step well under the 30-min gap)
    rows = [
        (0, 0, T, KIND_CART),
        (0, 2, T + 10 * MINUTE, KIND_VIEW),
        (0, 3, T + 20 * MINUTE, KIND_VIEW),
        (0, 4, T + 30 * MINUTE, KIND_VIEW),
        (0, 1, T + 40 * MINUTE, KIND_CART),
    ]
    inter = interactions(rows, users=1, items=5)
    _, session = sessions_of(inter, GAP)
    assert session.tolist() == [0, 0, 0, 0, 0]  # one visit
    # when
    top, baskets = bought_together(inter, k=10, gap_seconds=GAP, min_support=1, shrink=0.0)
    # then 0 and 1 were carted in the same visit: one basket, bought together
    assert baskets == 1
    assert neighbour_list(top, 0) == [1]


def test_bought_together_without_cart_adds_is_empty() -> None:
    inter = interactions([(0, 0, T, KIND_VIEW), (0, 1, T, KIND_VIEW)], users=1, items=2)
    top, baskets = bought_together(inter, k=10, gap_seconds=GAP, min_support=1, shrink=0.0)
    assert baskets == 0
    assert top.nnz == 0
    assert top.n_items == 2


def test_next_item_follows_time_order_within_a_session() -> None:
    # given (stored out of order) a visit viewing 0, then 1 (viewed and carted: one
    # step), then 2; two hours later another visit with 3
    rows = [
        (0, 2, T + 3 * MINUTE, KIND_VIEW),
        (0, 1, T + 2 * MINUTE, KIND_CART),
        (0, 3, T + 123 * MINUTE, KIND_VIEW),
        (0, 0, T, KIND_VIEW),
        (0, 1, T + 1 * MINUTE, KIND_VIEW),
    ]
    inter = interactions(rows, users=1, items=4)
    # when
    top, sessions = next_item(inter, k=5, gap_seconds=GAP, now=T, half_life_days=1e9, smoothing=0.0)
    # then 0 → 1 → 2, no 1 → 1, nothing across the gap, nothing backwards
    assert sessions == 2
    assert neighbour_list(top, 0) == [1]
    assert neighbour_list(top, 1) == [2]
    assert neighbour_list(top, 2) == []
    assert neighbour_list(top, 3) == []
    assert top.row(0)[1].tolist() == pytest.approx([1.0])
    assert top.row(1)[1].tolist() == pytest.approx([1.0])  # the repeat does not dilute 1 → 2


def test_next_item_probability_is_shrunk_by_smoothing() -> None:
    # given 0 → 1 in two visits, 0 → 2 in one, and 3 → 4 once
    rows = []
    for user, (a, b) in enumerate([(0, 1), (0, 1), (0, 2), (3, 4)]):
        rows += [(user, a, T, KIND_VIEW), (user, b, T + MINUTE, KIND_VIEW)]
    inter = interactions(rows, users=4, items=5)
    # when
    top, sessions = next_item(
        inter, k=5, gap_seconds=GAP, now=T + MINUTE, half_life_days=1e9, smoothing=1.0
    )
    # then P(next | current) = count / (count from current + smoothing)
    assert sessions == 4
    assert neighbour_list(top, 0) == [1, 2]
    assert top.row(0)[1].tolist() == pytest.approx([2 / 4, 1 / 4])
    # a transition seen once is far from certain
    assert top.row(3)[1].tolist() == pytest.approx([1 / 2])


def test_next_item_counts_an_old_transition_less() -> None:
    # given 0 → 1 a year ago, 0 → 2 today
    year = 365 * DAY
    rows = [
        (0, 0, T - year, KIND_VIEW),
        (0, 1, T - year + MINUTE, KIND_VIEW),
        (1, 0, T, KIND_VIEW),
        (1, 2, T + MINUTE, KIND_VIEW),
    ]
    inter = interactions(rows, users=2, items=3)
    # when
    top, _ = next_item(inter, k=5, gap_seconds=GAP, now=T, half_life_days=30.0, smoothing=1.0)
    # then
    assert neighbour_list(top, 0) == [2, 1]


# --- trending and popularity ----------------------------------------------------------


def test_trending_is_dominated_by_recent_interactions() -> None:
    # given item 0 viewed ten times a month ago, item 1 twice today
    rows = [(u, 0, T - 30 * DAY, KIND_VIEW) for u in range(10)]
    rows += [(u, 1, T, KIND_VIEW) for u in range(2)]
    inter = interactions(rows, users=10, items=3)
    weights = (1.0, 3.0, 5.0)
    # when
    short = trending(inter, now=T, half_life_days=3.0, weights=weights)
    long = trending(inter, now=T, half_life_days=3650.0, weights=weights)
    # then with a short half-life today's item trends, with a long one the busy one does
    assert short[1] > short[0]
    assert long[0] > long[1]
    assert short[2] == 0.0
    assert short.tolist() == pytest.approx([10 * 0.5**10, 2.0, 0.0], rel=1e-5)


def test_trending_weighs_purchases_more_than_views() -> None:
    inter = interactions(
        [(0, 0, T, KIND_VIEW), (1, 0, T, KIND_VIEW), (2, 1, T, KIND_PURCHASE)], users=3, items=2
    )
    scores = trending(inter, now=T, half_life_days=3.0, weights=(1.0, 3.0, 5.0))
    assert scores.tolist() == pytest.approx([2.0, 5.0])


def test_popularity_counts_distinct_users_not_interactions() -> None:
    # given one user viewing item 0 five times, two users viewing item 1 once each
    rows = [(0, 0, T + n, KIND_VIEW) for n in range(5)]
    rows += [(1, 1, T, KIND_VIEW), (2, 1, T, KIND_PURCHASE)]
    inter = interactions(rows, users=3, items=3)
    # when
    pop = popularity(inter)
    # then
    assert pop.tolist() == [1.0, 2.0, 0.0]


# --- evaluation -----------------------------------------------------------------------


def test_time_split_holds_out_the_latest_fraction_by_time() -> None:
    # given 100 interactions stored in random time order
    rng = np.random.default_rng(1)
    ts = rng.permutation(100).astype(np.float64) * MINUTE + T
    inter = Interactions(
        rng.integers(0, 5, 100).astype(np.int32),
        rng.integers(0, 7, 100).astype(np.int32),
        ts,
        np.zeros(100, np.int8),
        [f"u{n}" for n in range(5)],
        [f"sku-{n}" for n in range(7)],
    )
    # when
    split = time_split(inter, holdout_fraction=0.2)
    # then the 20 latest are held out, everything before trains
    assert sorted(split.test.ts.tolist()) == sorted(ts.tolist())[80:]
    assert len(split.train) == 80
    assert split.train.ts.max() < split.at <= split.test.ts.min()
    assert split.test.item_ids == inter.item_ids
    assert split.train.user_ids == inter.user_ids


def test_task_build_asks_visitors_with_history_for_their_new_items() -> None:
    # given a split at T: u0 saw 0 then 1 before, then 1 again and 2, 3 after; u1 only
    # after (cold start); u2 only re-visits what it knew; u3 only before
    before = [
        (0, 0, T - 2 * DAY, KIND_VIEW),
        (0, 1, T - DAY, KIND_CART),
        (2, 4, T - DAY, KIND_VIEW),
        (3, 5, T - DAY, KIND_VIEW),
    ]
    after = [
        (0, 1, T + DAY, KIND_PURCHASE),
        (0, 2, T + DAY, KIND_VIEW),
        (0, 3, T + 2 * DAY, KIND_VIEW),
        (1, 2, T + DAY, KIND_VIEW),
        (2, 4, T + DAY, KIND_PURCHASE),
    ]
    split = Split(interactions(before, users=4, items=6), interactions(after, users=4, items=6), T)
    # when
    task = task_build(split)
    # then only u0 is asked, with its history newest first, for the items new to it
    assert task.users.tolist() == [0]
    assert [(item, kind) for item, _, kind in task.histories[0]] == [
        (1, KIND_CART),
        (0, KIND_VIEW),
    ]
    assert task.targets == [{2, 3}]


def oracle(inter: Interactions, histories: dict[int, int], targets: dict[int, list[int]]) -> Models:
    """Models whose item-item neighbours of each visitor's one history item are exactly
    that visitor's targets."""
    rows, cols, vals = [], [], []
    for user, item in histories.items():
        for rank, target in enumerate(targets[user]):
            rows.append(item)
            cols.append(target)
            vals.append(1.0 - rank / 100)
    n = inter.n_items
    ii = csr_topk(sparse.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32), 50)
    return Models(
        version=1,
        item_ids=inter.item_ids,
        item_item=ii,
        bought_together=TopK.empty(n),
        next_item=TopK.empty(n),
        trending=np.zeros(n, np.float32),
        popularity=np.zeros(n, np.float32),
    )


def test_a_model_that_ranks_exactly_the_targets_gets_recall_one() -> None:
    # given three visitors, each with one item before the split and 2-4 new ones after
    histories = {0: 0, 1: 1, 2: 2}
    targets = {0: [10, 11], 1: [12, 13, 14], 2: [10, 15, 16, 17]}
    before = [(u, item, T - DAY, KIND_VIEW) for u, item in histories.items()]
    after = [(u, j, T + DAY, KIND_VIEW) for u, items in targets.items() for j in items]
    split = Split(
        interactions(before, users=3, items=18), interactions(after, users=3, items=18), T
    )
    models = oracle(split.train, histories, targets)
    # when
    metrics = evaluate(models, split)
    # then the perfect ranking scores 1 at 10, and 1 / |targets| of recall at 1
    assert metrics["users"] == 3
    assert at_k(metrics, "item_item", "recall", 10) == 1.0
    assert at_k(metrics, "item_item", "ndcg", 10) == 1.0
    assert at_k(metrics, "item_item", "hit_rate", 10) == 1.0
    assert at_k(metrics, "item_item", "recall", 1) == pytest.approx(
        (1 / 2 + 1 / 3 + 1 / 4) / 3, abs=1e-5
    )
    assert at_k(metrics, "personal", "recall", 10) == 1.0
    # and the empty baseline finds nothing
    assert at_k(metrics, "popularity", "recall", 10) == 0.0


@pytest.fixture(scope="module")
def planted_shop() -> Planted:
    return planted()


@pytest.fixture(scope="module")
def planted_metrics(planted_shop: Planted) -> dict[str, object]:
    split = time_split(planted_shop.inter, holdout_fraction=0.2)
    models, _ = models_fit(split.train, now=split.at, params=params_current())
    return evaluate(models, split)


def test_item_item_beats_popularity_on_recall_and_ndcg_at_10(
    planted_metrics: dict[str, object],
) -> None:
    """Done when: on planted bundles, item-item beats the popularity baseline."""
    users = planted_metrics["users"]
    assert isinstance(users, int)
    assert users >= 100
    for measure in ("recall", "ndcg"):
        learned = at_k(planted_metrics, "item_item", measure, 10)
        baseline = at_k(planted_metrics, "popularity", measure, 10)
        assert learned > baseline, measure


def test_the_personal_blend_beats_popularity_on_planted_bundles(
    planted_metrics: dict[str, object],
) -> None:
    for measure in ("recall", "ndcg"):
        blend = at_k(planted_metrics, "personal", measure, 10)
        baseline = at_k(planted_metrics, "popularity", measure, 10)
        assert blend > baseline, measure


def test_metrics_are_shares_and_recall_grows_with_k(planted_metrics: dict[str, object]) -> None:
    models = planted_metrics["models"]
    assert isinstance(models, dict)
    assert set(models) == {
        "popularity",
        "trending",
        "item_item",
        "svd",
        "bought_together",
        "next_item",
        "personal",
    }
    assert planted_metrics["k"] == list(KS)
    for figures in models.values():
        for measure in ("recall", "ndcg", "hit_rate"):
            assert all(0.0 <= v <= 1.0 for v in figures[measure])
        assert figures["recall"] == sorted(figures["recall"])
        assert figures["hit_rate"] == sorted(figures["hit_rate"])


# --- The factorized model (PureSVD) ---------------------------------------------------------


def test_the_factorized_model_finds_the_planted_bundles(planted_shop: Planted) -> None:
    from recommendations.algorithms import svd_neighbours, user_item_matrix

    x = user_item_matrix(
        planted_shop.inter, now=NOW.timestamp(), half_life_days=30.0, weights=(1.0, 3.0, 5.0)
    )
    top = svd_neighbours(x, rank=32, k=4)
    in_bundle = 0
    for group in planted_shop.bundles:
        for item in group:
            in_bundle += len(set(top.row(item)[0].tolist()) & set(group))
    share = in_bundle / sum(4 * len(g) for g in planted_shop.bundles)
    assert share > 0.8  # most of an item's 4 nearest factorized neighbours are its bundle
    assert top.nnz <= x.shape[1] * 4
    assert all(item not in top.row(item)[0].tolist() for item in range(x.shape[1]))


def test_the_blend_uses_the_factorized_model_only_where_it_beats_item_item(
    planted_metrics: dict[str, object],
) -> None:
    svd, ii = at_k(planted_metrics, "svd"), at_k(planted_metrics, "item_item")
    assert planted_metrics["item_model"] == ("svd" if svd > ii else "item_item")


def test_without_a_factorized_model_the_blend_is_item_item(planted_shop: Planted) -> None:
    split = time_split(planted_shop.inter, holdout_fraction=0.2)
    params = {**params_current(), "svd_rank": 0}
    models, _ = models_fit(split.train, now=split.at, params=params)
    metrics = evaluate(models, split)
    assert models.svd is None
    assert metrics["item_model"] == "item_item"
    assert at_k(metrics, "svd") == 0.0
