"""Scoring a visitor's candidates (online, one visitor; offline, a matrix of visitors),
diversity re-ranking, and the stored artifact: no database.

The online blend must be the offline blend row for row, since the offline one is what
the evaluation measures and the online one is what `/recommendations` serves.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from recommendations import artifact
from recommendations.algorithms import KIND_CART, KIND_PURCHASE, KIND_VIEW, TopK, csr_topk
from recommendations.evaluation import task_build, time_split
from recommendations.ranking import (
    HISTORY,
    KIND_HISTORY_WEIGHT,
    RECENCY,
    Models,
    Scored,
    blend_matrix,
    blend_scores,
    diversify,
    history_weights,
    neighbours,
    trending_scored,
)
from recommendations.services import models_fit, params_current
from tests.recommendations.planted import NOW, Planted, planted


def topk(n: int, rows: dict[int, dict[int, float]]) -> TopK:
    """Neighbour lists from {item: {neighbour: score}}."""
    r = [i for i, row in rows.items() for _ in row]
    c = [j for row in rows.values() for j in row]
    v = [s for row in rows.values() for s in row.values()]
    return csr_topk(sparse.csr_matrix((v, (r, c)), shape=(n, n), dtype=np.float32), 50)


def hand_models(
    n: int,
    *,
    item_item: dict[int, dict[int, float]] | None = None,
    bought_together: dict[int, dict[int, float]] | None = None,
    next_item: dict[int, dict[int, float]] | None = None,
    trending: list[float] | None = None,
) -> Models:
    return Models(
        version=1,
        item_ids=[f"sku-{i}" for i in range(n)],
        item_item=topk(n, item_item or {}),
        bought_together=topk(n, bought_together or {}),
        next_item=topk(n, next_item or {}),
        trending=np.asarray(trending or [0.0] * n, np.float32),
        popularity=np.zeros(n, np.float32),
    )


@pytest.fixture(scope="module")
def shop() -> Planted:
    return planted()


@pytest.fixture(scope="module")
def fitted(shop: Planted) -> Models:
    models, _ = models_fit(shop.inter, now=NOW.timestamp(), params=params_current())
    return models


@pytest.fixture(scope="module")
def visitors(shop: Planted) -> tuple[Models, list[list[tuple[int, float, int]]]]:
    """Models fitted before a split, and the histories of visitors active on both sides."""
    split = time_split(shop.inter, holdout_fraction=0.2)
    models, _ = models_fit(split.train, now=split.at, params=params_current())
    return models, task_build(split).histories


# --- history ----------------------------------------------------------------------------


def test_history_weights_keeps_distinct_items_newest_first_with_their_strongest_kind() -> None:
    # given newest first: view 5, view 3, buy 5 (earlier), cart 7, view 3 again
    history = [(5, KIND_VIEW), (3, KIND_VIEW), (5, KIND_PURCHASE), (7, KIND_CART), (3, KIND_VIEW)]
    # when
    weighted = history_weights(history)
    # then each item once, in the order last touched, weighted by kind and recency
    assert [(item, kind) for item, _, kind in weighted] == [
        (5, KIND_PURCHASE),
        (3, KIND_VIEW),
        (7, KIND_CART),
    ]
    assert [w for _, w, _ in weighted] == pytest.approx([3.0, 1.0 * 0.85, 2.0 * 0.85**2])
    assert (RECENCY, KIND_HISTORY_WEIGHT) == (0.85, (1.0, 2.0, 3.0))


def test_history_weights_keeps_only_the_most_recent_items() -> None:
    # given 30 distinct items viewed, newest first, and an old purchase of the newest
    history = [(item, KIND_VIEW) for item in range(30)] + [(0, KIND_PURCHASE)]
    # when
    weighted = history_weights(history)
    # then the 20 newest, each weighted lower than the one before
    assert [item for item, _, _ in weighted] == list(range(HISTORY))
    assert HISTORY == 20
    weights = [w for _, w, _ in weighted]
    assert weights == sorted(weights, reverse=True)
    assert weighted[0] == (0, 3.0, KIND_PURCHASE)
    assert weighted[-1][1] == pytest.approx(RECENCY**19)


# --- the personal blend ---------------------------------------------------------------


def test_blend_scores_equal_the_offline_blend_matrix_row_for_every_visitor(
    visitors: tuple[Models, list[list[tuple[int, float, int]]]],
) -> None:
    # given the visitors the evaluation scores
    models, histories = visitors
    assert len(histories) >= 100
    # when
    offline = blend_matrix(models, histories).tocsr()
    # then each visitor's online blend is its row of the matrix, score for score
    with_carts = 0
    for r, history in enumerate(histories):
        online = {c.item: c.score for c in blend_scores(models, history)}
        row = offline.getrow(r)
        assert set(online) == set(row.indices.tolist())
        expected = [online[j] for j in row.indices.tolist()]
        assert row.data.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
        with_carts += any(kind >= KIND_CART for _, _, kind in history)
    assert with_carts > 10  # the bought-together part was exercised too


def test_blend_never_recommends_an_item_from_the_history(
    visitors: tuple[Models, list[list[tuple[int, float, int]]]],
) -> None:
    models, histories = visitors
    offline = blend_matrix(models, histories).tocsr()
    for r, history in enumerate(histories):
        seen = {item for item, _, _ in history}
        online = blend_scores(models, history)
        assert online  # planted visitors always have neighbours
        assert not seen & {c.item for c in online}
        assert not seen & set(offline.getrow(r).indices.tolist())
        scores = [c.score for c in online]
        assert scores == sorted(scores, reverse=True)
        assert all(c.because in seen for c in online)


def test_blend_adds_every_model_with_its_weight_and_names_the_strongest_reason() -> None:
    # given a visitor who viewed 0 (newest) and carted 1
    models = hand_models(
        8,
        item_item={0: {2: 0.2, 3: 0.9, 1: 0.5}, 1: {2: 0.9}},
        bought_together={0: {4: 1.0}, 1: {4: 0.4, 5: 0.2}},
        next_item={0: {6: 0.8}, 1: {7: 0.9}},
    )
    weighted = history_weights([(0, KIND_VIEW), (1, KIND_CART)])  # weights 1.0 and 1.7
    # when
    scored = {c.item: c for c in blend_scores(models, weighted)}
    # then (blend 1 × item-item + 0.5 × bought together of carted items + 0.5 × next)
    assert set(scored) == {2, 3, 4, 5, 6}  # not 1 (history), not 7 (next of an older item)
    assert scored[2].score == pytest.approx(0.2 + 1.7 * 0.9, rel=1e-6)
    assert scored[3].score == pytest.approx(0.9, rel=1e-6)
    assert scored[4].score == pytest.approx(0.5 * 1.7 * 0.4, rel=1e-6)  # 0 was only viewed
    assert scored[6].score == pytest.approx(0.5 * 0.8, rel=1e-6)
    # and the reason is the history item (and model) that contributed most
    assert (scored[2].because, scored[2].source) == (1, "item_item")
    assert (scored[3].because, scored[3].source) == (0, "item_item")
    assert (scored[4].because, scored[4].source) == (1, "bought_together")
    assert (scored[6].because, scored[6].source) == (0, "next_item")
    assert [c.item for c in blend_scores(models, weighted)] == [2, 3, 6, 4, 5]


def test_blend_of_an_empty_history_is_empty() -> None:
    models = hand_models(3, item_item={0: {1: 1.0}}, next_item={0: {1: 1.0}})
    assert blend_scores(models, []) == []
    assert blend_matrix(models, [[], history_weights([(0, KIND_VIEW)])]).getrow(0).nnz == 0


def test_neighbours_and_trending_lists() -> None:
    # given
    models = hand_models(5, item_item={0: {3: 0.2, 1: 0.7}}, trending=[0.5, 0.0, 2.0, 1.0, 3.0])
    # when
    similar = neighbours(models, "item_item", 0)
    hot = trending_scored(models, allowed=lambda j: j != 4, wanted=2)
    everything = trending_scored(models, allowed=lambda j: True, wanted=10)
    # then best first, trending skipping what is not allowed and what never trended
    assert [(c.item, c.because) for c in similar] == [(1, 0), (3, 0)]
    assert [(c.item, c.source) for c in hot] == [(2, "trending"), (3, "trending")]
    assert [c.item for c in everything] == [4, 2, 3, 0]


# --- diversity ------------------------------------------------------------------------


def ranked_list(categories: list[str]) -> list[Scored]:
    """Candidates in relevance order (1.0, 0.98, …), one per category given."""
    return [Scored(i, 1.0 - i / 50, "item_item") for i in range(len(categories))]


# eight "shoes" first, then three "bags", three "hats"
CATEGORIES = ["shoes"] * 8 + ["bags"] * 3 + ["hats"] * 3


def category(item: int) -> str:
    return CATEGORIES[item]


def test_diversify_without_diversity_keeps_the_relevance_order() -> None:
    ranked = ranked_list(CATEGORIES)
    picked = diversify(ranked, category=category, limit=6, diversity=0.0)
    assert picked == ranked[:6]


def test_diversify_spreads_the_top_over_categories() -> None:
    # given
    ranked = ranked_list(CATEGORIES)
    # when
    plain = diversify(ranked, category=category, limit=6, diversity=0.0)
    spread = diversify(ranked, category=category, limit=6, diversity=0.8)
    # then fewer shoes in the top six, and the best of each category still comes first
    shoes = [sum(category(c.item) == "shoes" for c in picks) for picks in (plain, spread)]
    assert shoes[0] == 6
    assert shoes[1] < shoes[0]
    assert {category(c.item) for c in spread} == {"shoes", "bags", "hats"}
    assert spread[0] == ranked[0]
    assert len(spread) == 6


def test_diversify_per_category_is_a_hard_cap() -> None:
    ranked = ranked_list(CATEGORIES)
    for diversity in (0.0, 0.3, 1.0):
        picked = diversify(ranked, category=category, limit=6, diversity=diversity, per_category=2)
        counts = {cat: sum(category(c.item) == cat for c in picked) for cat in set(CATEGORIES)}
        assert max(counts.values()) <= 2
        assert len(picked) == 6


def test_diversify_counts_earlier_picks_against_the_cap_without_returning_them() -> None:
    # given two shoes already picked, and more shoes, bags and hats to fill with
    already = [Scored(0, 1.0, "item_item"), Scored(1, 0.9, "item_item")]
    fill = ranked_list(CATEGORIES)[2:]
    # when
    picked = diversify(
        fill, category=category, limit=4, diversity=0.0, per_category=2, already=already
    )
    # then no more shoes (and two bags at most): the earlier picks are not repeated
    assert [c.item for c in picked] == [8, 9, 11, 12]
    assert not {c.item for c in already} & {c.item for c in picked}


def test_diversify_of_nothing_is_nothing() -> None:
    assert diversify([], category=category, limit=5, diversity=0.5) == []


# --- artifact -------------------------------------------------------------------------


def test_artifact_round_trip_serves_the_same_recommendations(fitted: Models, shop: Planted) -> None:
    # when
    loaded = artifact.load(artifact.dump(fitted), version=7, blend=fitted.blend)
    # then
    assert loaded.item_ids == fitted.item_ids
    assert loaded.version == 7
    for name in artifact.PARTS:
        a, b = loaded.model(name), fitted.model(name)
        assert a.indptr.tolist() == b.indptr.tolist()
        assert a.indices.tolist() == b.indices.tolist()
        assert a.scores.tolist() == b.scores.tolist()
    assert loaded.trending.tolist() == fitted.trending.tolist()
    assert loaded.popularity.tolist() == fitted.popularity.tolist()
    assert loaded.trending_order.tolist() == fitted.trending_order.tolist()
    assert loaded.index == fitted.index
    history = history_weights([(b[0], KIND_VIEW) for b in shop.bundles[:3]])
    assert blend_scores(loaded, history) == blend_scores(fitted, history)


def test_artifact_is_much_smaller_than_a_dense_item_matrix() -> None:
    # given a thousand items
    shop = planted(users=2000, bundles=200)
    models, _ = models_fit(shop.inter, now=NOW.timestamp(), params=params_current())
    n = len(models.item_ids)
    assert n > 1000
    # when
    blob = artifact.dump(models)
    # then, for all four neighbour models together, a fifth of one dense float32
    # items × items matrix (at a thousand items; the share falls as the catalog grows:
    # top-k lists grow with the items, a dense matrix with their square)
    assert len(blob) * 5 < n * n * 4
    k = params_current()["neighbours"]
    for name in artifact.PARTS:
        assert models.model(name).nnz <= n * k


def test_a_factorized_blend_says_so_in_its_reasons() -> None:
    from recommendations import serving
    from recommendations.selectors import Catalog

    shop = planted()
    models, _ = models_fit(
        shop.inter, now=NOW.timestamp(), params=params_current(), item_model="svd"
    )
    answer = serving.recommend(
        models,
        serving.Ask(limit=3, diversity=0.0),
        data={"recent": [("sku-3", 0)], "purchased": []},
        personal=True,
        catalog=Catalog({}, (None, 0)),
    )
    assert answer.strategy == "personal"
    assert [i.source for i in answer.items] == ["svd"] * 3
    assert answer.items[0].reason == "liked by people who liked sku-3"
