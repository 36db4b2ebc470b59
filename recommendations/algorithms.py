"""The models, as plain array arithmetic over interactions (no database here).

Every similarity model is kept as top-k neighbour lists per item (`TopK`, a CSR matrix
whose row i holds item i's best k neighbours), never as a dense item × item matrix:
co-occurrences are computed a block of items at a time, so memory follows
block × items, not items².

- item-item: cosine between items' columns of the user × item matrix, whose cells are
  the user's time-decayed interaction weights (views, cart adds, purchases weighted
  differently), log-damped so one obsessive user does not dominate; a shrinkage term
  in the denominator discounts pairs seen by few users.
- bought together: cosine over baskets (the items one profile put in its cart or bought
  in one session), with a minimum support of co-baskets.
- next item: first-order Markov transitions between consecutive distinct items of a
  session, time-decayed, P(next | current) shrunk towards 0 for rarely seen items.
- factorized (`svd`): PureSVD (Cremonesi, Koren & Turrin, 2010) — a rank-r truncated SVD
  of the same user × item matrix; item i's neighbours are the largest entries of its row
  of V·Vᵀ, so Σ_h w_h (V·Vᵀ)[h, c] over a visitor's history is PureSVD's score. It
  generalizes across items nobody co-viewed directly; it is served in the blend only
  where it beats item-item on held-out data.
- trending: decayed popularity (a short half-life), global; per category at serve time.
- popularity: distinct users per item, the baseline every model is judged against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

KIND_VIEW, KIND_CART, KIND_PURCHASE = 0, 1, 2
DAY = 86400.0


@dataclass(frozen=True)
class Interactions:
    """One row per interaction, as parallel arrays; users and items as integer codes."""

    users: np.ndarray  # int32
    items: np.ndarray  # int32
    ts: np.ndarray  # float64, epoch seconds
    kinds: np.ndarray  # int8: KIND_*
    user_ids: list[str]
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def where(self, mask: np.ndarray) -> Interactions:
        """The interactions where mask holds, in the same code spaces."""
        return Interactions(
            self.users[mask],
            self.items[mask],
            self.ts[mask],
            self.kinds[mask],
            self.user_ids,
            self.item_ids,
        )


@dataclass(frozen=True)
class TopK:
    """Top-k neighbours per item: row i is item i's neighbours, best first."""

    indptr: np.ndarray  # int64, n_items + 1
    indices: np.ndarray  # int32
    scores: np.ndarray  # float32

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.indptr[i], self.indptr[i + 1]
        return self.indices[a:b], self.scores[a:b]

    def matrix(self) -> sparse.csr_matrix:
        n = self.n_items
        return sparse.csr_matrix((self.scores, self.indices, self.indptr), shape=(n, n))

    @classmethod
    def empty(cls, n: int) -> TopK:
        return cls(
            np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int32), np.zeros(0, np.float32)
        )


def decayed(ts: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    """0.5 ** (age / half-life): 1 now, ½ one half-life ago (future times count as now)."""
    age = np.maximum(now - ts, 0.0) / (half_life_days * DAY)
    return np.power(0.5, age).astype(np.float32)


def kind_weights(kinds: np.ndarray, weights: tuple[float, float, float]) -> np.ndarray:
    return np.asarray(weights, dtype=np.float32)[kinds]


def csr_topk(m: sparse.csr_matrix, k: int, *, drop_diagonal: bool = False, row0: int = 0) -> TopK:
    """Each row's k largest positive entries, best first (ties by column), vectorized.
    `row0` is the index of m's first row in the full item space (for the diagonal)."""
    m = m.tocsr()
    m.sum_duplicates()
    if m.shape[0] == 0:
        return TopK.empty(0)
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    keep = m.data > 0
    if drop_diagonal:
        keep &= m.indices != rows + row0
    rows, cols, vals = rows[keep], m.indices[keep], m.data[keep]
    order = np.lexsort((cols, -vals, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    counts = np.bincount(rows, minlength=m.shape[0])
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(rows)) - np.repeat(starts, counts)
    take = rank < k
    counts = np.minimum(counts, k)
    indptr = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return TopK(indptr, cols[take].astype(np.int32), vals[take].astype(np.float32))


def _stack(parts: list[TopK], n: int) -> TopK:
    if not parts:
        return TopK.empty(n)
    offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
    indptr = np.concatenate(
        [np.zeros(1, np.int64)]
        + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
    )
    return TopK(
        indptr.astype(np.int64),
        np.concatenate([p.indices for p in parts]).astype(np.int32),
        np.concatenate([p.scores for p in parts]).astype(np.float32),
    )


def cosine_topk(
    x: sparse.csr_matrix,
    k: int,
    *,
    shrink: float = 0.0,
    min_support: int = 1,
    block: int = 2048,
) -> TopK:
    """Top-k cosine neighbours between the columns (items) of x (rows × items), a block
    of items at a time. With min_support > 1, a pair must share that many rows."""
    x = x.tocsr().astype(np.float32)
    x.eliminate_zeros()  # a stored zero is no interaction (min_support counts rows)
    n = x.shape[1]
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=0)).ravel()).astype(np.float32)
    xt = x.T.tocsr()  # items × rows
    binary = None
    if min_support > 1:
        binary = x.copy()
        binary.data[:] = 1.0
        binary_t = binary.T.tocsr()
    parts: list[TopK] = []
    for start in range(0, n, block):
        end = min(n, start + block)
        co = (xt[start:end] @ x).tocsr()  # block items × all items
        co.sum_duplicates()
        if co.nnz:
            rows = np.repeat(np.arange(end - start), np.diff(co.indptr))
            co.data = co.data / (norms[rows + start] * norms[co.indices] + shrink)
            if binary is not None:
                support = (binary_t[start:end] @ binary).tocsr()
                co = sparse.csr_matrix(co.multiply(support >= min_support))
        parts.append(csr_topk(co, k, drop_diagonal=True, row0=start))
    return _stack(parts, n)


def user_item_matrix(
    inter: Interactions, *, now: float, half_life_days: float, weights: tuple[float, float, float]
) -> sparse.csr_matrix:
    """Users × items, each cell log1p(Σ kind weight × decay) of that user's interactions."""
    w = kind_weights(inter.kinds, weights) * decayed(inter.ts, now, half_life_days)
    m = sparse.csr_matrix(
        (w, (inter.users, inter.items)), shape=(inter.n_users, inter.n_items), dtype=np.float32
    )
    m.sum_duplicates()
    m.data = np.log1p(m.data)
    return m


def item_item(
    inter: Interactions,
    *,
    now: float,
    k: int,
    half_life_days: float,
    weights: tuple[float, float, float],
    shrink: float,
) -> TopK:
    x = user_item_matrix(inter, now=now, half_life_days=half_life_days, weights=weights)
    return cosine_topk(x, k, shrink=shrink)


def svd_neighbours(
    x: sparse.csr_matrix, *, rank: int, k: int, block: int = 1024, seed: int = 0
) -> TopK:
    """Top-k entries of each item's row of V·Vᵀ, V the item factors of a rank-`rank`
    truncated SVD of x (users × items), a block of items at a time."""
    from sklearn.decomposition import TruncatedSVD
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    n = x.shape[1]
    r = min(rank, min(x.shape) - 1)
    if r < 2 or x.nnz == 0:
        return TopK.empty(n)
    with threadpool_limits(limits=2):
        svd = TruncatedSVD(n_components=r, algorithm="randomized", n_iter=5, random_state=seed)
        svd.fit(x.astype(np.float32))
        # item embeddings V·Σ, compared by cosine: the low-rank smoothing of the
        # item-item cosine (plain V·Vᵀ weighs every kept direction alike, noise too)
        v = svd.components_.T * svd.singular_values_
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        v = np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)
        parts = []
        for start in range(0, n, block):
            end = min(n, start + block)
            sims = v[start:end] @ v.T  # block × items, dense but bounded by the block
            sims[np.arange(end - start), np.arange(start, end)] = 0.0
            kk = min(k, n - 1)  # n ≥ 3 here
            top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            rows = np.repeat(np.arange(end - start), top.shape[1])
            vals = np.take_along_axis(sims, top, axis=1).ravel()
            m = sparse.csr_matrix(
                (vals, (rows, top.ravel())), shape=(end - start, n), dtype=np.float32
            )
            parts.append(csr_topk(m, k))
    return _stack(parts, n)


def sessions_of(inter: Interactions, gap_seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(order, session id per interaction in that order): interactions sorted by user and
    time, a new session after a gap longer than gap_seconds (the ingestion rule)."""
    order = np.lexsort((inter.ts, inter.users))
    u, t = inter.users[order], inter.ts[order]
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        new[1:] = (u[1:] != u[:-1]) | (t[1:] - t[:-1] > gap_seconds)
    return order, np.cumsum(new) - 1


def bought_together(
    inter: Interactions, *, k: int, gap_seconds: float, min_support: int, shrink: float
) -> tuple[TopK, int]:
    """Cosine between items over baskets (cart adds and purchases of one session).
    Returns the neighbours and the number of baskets with two items or more."""
    if not (inter.kinds >= KIND_CART).any():
        return TopK.empty(inter.n_items), 0
    # sessions follow every interaction (views between two cart adds keep one visit
    # one session), then only the cart adds and purchases make the basket
    order, session = sessions_of(inter, gap_seconds)
    keep = inter.kinds[order] >= KIND_CART
    order, session = order[keep], session[keep]
    b = sparse.csr_matrix(
        (np.ones(len(order), np.float32), (session, inter.items[order])),
        shape=(int(session[-1]) + 1, inter.n_items),
    )
    b.sum_duplicates()
    b.data[:] = 1.0
    sizes = np.diff(b.indptr)
    b = b[sizes >= 2]
    return cosine_topk(b, k, shrink=shrink, min_support=min_support), int(b.shape[0])


def next_item(
    inter: Interactions,
    *,
    k: int,
    gap_seconds: float,
    now: float,
    half_life_days: float,
    smoothing: float,
) -> tuple[TopK, int]:
    """P(next = j | current = i) from consecutive distinct items within sessions,
    time-decayed and shrunk: count(i→j) / (count(i→·) + smoothing). Returns the
    neighbours and the number of sessions."""
    if len(inter) == 0:
        return TopK.empty(inter.n_items), 0
    order, session = sessions_of(inter, gap_seconds)
    items, t = inter.items[order], inter.ts[order]
    # consecutive repeats of one item (view then cart add) are one step
    step = np.ones(len(items), dtype=bool)
    step[1:] = (items[1:] != items[:-1]) | (session[1:] != session[:-1])
    items, t, session = items[step], t[step], session[step]
    same = session[1:] == session[:-1]
    src, dst = items[:-1][same], items[1:][same]
    w = decayed(t[1:][same], now, half_life_days)
    n = inter.n_items
    m = sparse.csr_matrix((w, (src, dst)), shape=(n, n), dtype=np.float32)
    m.sum_duplicates()
    totals = np.asarray(m.sum(axis=1)).ravel()
    rows = np.repeat(np.arange(n), np.diff(m.indptr))
    m.data = m.data / (totals[rows] + smoothing)
    return csr_topk(m, k, drop_diagonal=True), int(session[-1]) + 1


def trending(
    inter: Interactions, *, now: float, half_life_days: float, weights: tuple[float, float, float]
) -> np.ndarray:
    """Decayed popularity per item (float32, one per item code)."""
    w = kind_weights(inter.kinds, weights) * decayed(inter.ts, now, half_life_days)
    return np.bincount(inter.items, weights=w, minlength=inter.n_items).astype(np.float32)


def popularity(inter: Interactions) -> np.ndarray:
    """Distinct users per item: the baseline."""
    if len(inter) == 0:
        return np.zeros(inter.n_items, np.float32)
    pairs = np.unique(inter.users.astype(np.int64) * inter.n_items + inter.items)
    return np.bincount(pairs % inter.n_items, minlength=inter.n_items).astype(np.float32)
