"""Clustering: fit, choose k by silhouette, check stability, label clusters, keep their
identity across runs. Pure computation on model-space matrices (segments.ml.transform).

Every algorithm ends with centroids, and every profile belongs to its nearest centroid:
that is what makes real-time assignment of a new profile one distance computation, the
same rule the batch used.
- `kmeans`: k-means++ (KMeans, 3 inits) on the whole fitting set;
- `minibatch_kmeans`: MiniBatchKMeans, for populations well above 100k;
- `agglomerative`: Ward linkage on a sample (quadratic memory), centroids = cluster means;
- `dbscan` / `hdbscan`: density clusters on a sample, the number of clusters is found,
  not chosen; sample points labelled noise are reported, then assigned like the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ALGORITHMS = ("kmeans", "minibatch_kmeans", "agglomerative", "dbscan", "hdbscan")
SILHOUETTE_SAMPLE = 4_000
AGGLOMERATIVE_MAX = 5_000


@dataclass(frozen=True)
class ClusteringConfig:
    algorithm: str = "kmeans"
    k_min: int = 2
    k_max: int = 10
    sample_size: int = 10_000
    eps: float = 0.5
    min_samples: int = 10
    bootstrap_runs: int = 5
    seed: int = 0


@dataclass
class KScore:
    k: int
    silhouette: float | None
    inertia: float


@dataclass
class ClusteringResult:
    k: int
    centroids: np.ndarray
    labels: np.ndarray
    scores: list[KScore]
    stability: dict[str, Any]
    noise_share: float | None = None
    silhouette: float | None = None
    notes: list[str] = field(default_factory=list)


class ClusteringFailed(ValueError):
    """The data does not support the requested clustering (said in words)."""


def nearest(Z: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each row (squared Euclidean distance)."""
    if len(Z) == 0:
        return np.zeros(0, dtype=np.int64)
    d = (
        (Z * Z).sum(axis=1)[:, None]
        - 2.0 * Z @ centroids.T
        + (centroids * centroids).sum(axis=1)[None, :]
    )
    return np.asarray(d.argmin(axis=1), dtype=np.int64)


def inertia_of(Z: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    return float(((Z - centroids[labels]) ** 2).sum())


def _means(Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    found = sorted(int(v) for v in set(labels.tolist()) if v >= 0)
    return np.vstack([Z[labels == c].mean(axis=0) for c in found])


def _fit_once(Z: np.ndarray, k: int, config: ClusteringConfig, seed: int) -> np.ndarray:
    """Centroids of one fit on Z."""
    from sklearn.cluster import DBSCAN, HDBSCAN, AgglomerativeClustering, KMeans, MiniBatchKMeans

    algo = config.algorithm
    if algo == "kmeans":
        return np.asarray(
            KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z).cluster_centers_,
            dtype=np.float64,
        )
    if algo == "minibatch_kmeans":
        return np.asarray(
            MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed)
            .fit(Z)
            .cluster_centers_,
            dtype=np.float64,
        )
    rng = np.random.default_rng(seed)
    sample = Z[rng.choice(len(Z), size=min(len(Z), _sample_cap(config)), replace=False)]
    if algo == "agglomerative":
        labels = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(sample)
    elif algo == "dbscan":
        labels = DBSCAN(eps=config.eps, min_samples=config.min_samples).fit_predict(sample)
    else:
        labels = HDBSCAN(min_cluster_size=max(2, config.min_samples), copy=True).fit_predict(sample)
    if (labels >= 0).sum() == 0 or len(set(labels[labels >= 0].tolist())) < 1:
        raise ClusteringFailed("no dense cluster found: lower eps or min_samples")
    return _means(sample, labels)


def _sample_cap(config: ClusteringConfig) -> int:
    if config.algorithm == "agglomerative":
        return min(config.sample_size, AGGLOMERATIVE_MAX)
    return config.sample_size


def _silhouette(S: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    from sklearn.metrics import silhouette_score

    ok = labels >= 0
    if len(set(labels[ok].tolist())) < 2 or ok.sum() < 3:
        return None
    return float(silhouette_score(S[ok], labels[ok], random_state=seed))


def cluster_fit(
    Z: np.ndarray,
    config: ClusteringConfig,
    *,
    fit_mask: np.ndarray | None = None,
    progress: Callable[[str], object] | None = None,
) -> ClusteringResult:
    """Fit on the rows of `fit_mask`, choose k, label every row of Z by nearest centroid."""
    from sklearn.metrics import adjusted_rand_score

    if config.algorithm not in ALGORITHMS:
        raise ClusteringFailed(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    F = Z if fit_mask is None else Z[fit_mask]
    if len(F) < 20:
        raise ClusteringFailed(f"{len(F)} profiles to cluster: at least 20 are needed")
    rng = np.random.default_rng(config.seed)
    S = F[rng.choice(len(F), size=min(len(F), SILHOUETTE_SAMPLE), replace=False)]
    density = config.algorithm in ("dbscan", "hdbscan")
    ks = [0] if density else list(range(config.k_min, min(config.k_max, len(F) - 1) + 1))
    if not ks:
        raise ClusteringFailed("k_min must be at most k_max")
    scores: list[KScore] = []
    fits: dict[int, np.ndarray] = {}
    for k in ks:
        if progress:
            progress(f"fitting k={k}" if k else f"fitting {config.algorithm}")
        centroids = _fit_once(F, k, config, config.seed)
        fits[len(centroids) if density else k] = centroids
        s_labels = nearest(S, centroids)
        scores.append(
            KScore(
                k=len(centroids),
                silhouette=_silhouette(S, s_labels, config.seed),
                inertia=inertia_of(F, centroids, nearest(F, centroids)),
            )
        )
    best = max(scores, key=lambda s: (s.silhouette if s.silhouette is not None else -2.0, -s.k))
    centroids = fits[best.k]
    notes: list[str] = []
    noise_share: float | None = None
    if density:
        noise_share = _noise_share(F, config)
        if best.k < 2:
            notes.append("one dense cluster only: every profile falls in it")
    # Stability: refit on bootstrap resamples, compare the labels they give the same
    # evaluation sample with the chosen fit's (adjusted Rand index, 1 = identical).
    base = nearest(S, centroids)
    aris: list[float] = []
    for b in range(config.bootstrap_runs):
        if progress:
            progress(f"stability check {b + 1}/{config.bootstrap_runs}")
        boot = F[rng.integers(0, len(F), size=min(len(F), max(config.sample_size, 2000)))]
        try:
            other = _fit_once(boot, best.k, config, config.seed + 1 + b)
        except ClusteringFailed:
            aris.append(0.0)
            continue
        aris.append(float(adjusted_rand_score(base, nearest(S, other))))
    stability = {
        "runs": len(aris),
        "ari_mean": float(np.mean(aris)) if aris else None,
        "ari_min": float(np.min(aris)) if aris else None,
    }
    return ClusteringResult(
        k=best.k,
        centroids=centroids,
        labels=nearest(Z, centroids),
        scores=sorted(scores, key=lambda s: s.k),
        stability=stability,
        noise_share=noise_share,
        silhouette=best.silhouette,
        notes=notes,
    )


def _noise_share(F: np.ndarray, config: ClusteringConfig) -> float:
    from sklearn.cluster import DBSCAN, HDBSCAN

    rng = np.random.default_rng(config.seed)
    sample = F[rng.choice(len(F), size=min(len(F), config.sample_size), replace=False)]
    if config.algorithm == "dbscan":
        labels = DBSCAN(eps=config.eps, min_samples=config.min_samples).fit_predict(sample)
    else:
        labels = HDBSCAN(min_cluster_size=max(2, config.min_samples), copy=True).fit_predict(sample)
    return float((labels < 0).mean())


def projection(
    Z: np.ndarray, labels: np.ndarray, *, points: int = 1500, seed: int = 0
) -> list[list[float]]:
    """A 2-D PCA projection of a sample, as [x, y, cluster index] rows (the scatter)."""
    from sklearn.decomposition import PCA

    if len(Z) == 0:
        return []
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(Z), size=min(len(Z), points), replace=False)
    sample = Z[idx]
    if sample.shape[1] >= 2 and len(sample) >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(sample)
    else:
        xy = np.column_stack([sample[:, 0], np.zeros(len(sample))])
    return [
        [round(float(x), 4), round(float(y), 4), int(c)]
        for (x, y), c in zip(xy, labels[idx], strict=True)
    ]


# --- Labels ------------------------------------------------------------------------------

WORDS: dict[str, tuple[str, str]] = {
    # feature: (word when high, word when low)
    "recency_days": ("lapsed", "recently active"),
    "tenure_days": ("long-standing", "new"),
    "events": ("high activity", "low activity"),
    "sessions": ("high frequency", "low frequency"),
    "purchases": ("frequent buyers", "rare buyers"),
    "revenue": ("high spend", "low spend"),
    "avg_session_minutes": ("long sessions", "short sessions"),
    "page_depth": ("deep browsing", "shallow browsing"),
    "dwell_seconds": ("long dwell", "short dwell"),
    "scroll_depth": ("deep scrolling", "shallow scrolling"),
    "cart_adds": ("many cart adds", "few cart adds"),
    "days_active": ("many active days", "few active days"),
}
LABEL_MIN_Z = 0.5


def cluster_label(
    centroid: np.ndarray, mean: np.ndarray, std: np.ndarray, names: list[str], *, words: int = 3
) -> str:
    """ "high frequency, high spend, recently active": the features where this centroid
    stands furthest from the population (in standard deviations), in words."""
    z = (centroid - mean) / np.where(std > 1e-12, std, 1.0)
    parts: list[str] = []
    for i in np.argsort(-np.abs(z)):
        if abs(z[i]) < LABEL_MIN_Z or len(parts) >= words:
            break
        name = names[i]
        if name.startswith("affinity:"):
            if z[i] > 0:
                parts.append(f"{name.split(':', 1)[1]} lovers")
            continue
        high, low = WORDS.get(name, (f"high {name}", f"low {name}"))
        parts.append(high if z[i] > 0 else low)
    return ", ".join(parts) if parts else "average behaviour"


def labels_unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


# --- Identity across runs -----------------------------------------------------------------


def match_clusters(
    previous: np.ndarray, labels: np.ndarray, k: int, *, taken: set[int]
) -> dict[int, int]:
    """New cluster index → stable cluster number. `previous` holds each profile's number
    from the last run (-1: none). A new cluster keeps an old number when the two share
    most of their members (the larger overlap wins, one-to-one); others get new numbers."""
    from scipy.optimize import linear_sum_assignment

    old_numbers = sorted(int(v) for v in set(previous.tolist()) if v >= 0)
    mapping: dict[int, int] = {}
    if old_numbers:
        C = np.zeros((k, len(old_numbers)))
        index = {n: j for j, n in enumerate(old_numbers)}
        for new, old in zip(labels.tolist(), previous.tolist(), strict=True):
            if old >= 0:
                C[new, index[old]] += 1
        rows, cols = linear_sum_assignment(-C)
        new_sizes = np.bincount(labels, minlength=k)
        old_sizes = C.sum(axis=0)
        for r, c in zip(rows, cols, strict=True):
            overlap = C[r, c]
            if overlap > 0 and (
                overlap >= 0.5 * new_sizes[r] or overlap >= 0.5 * max(old_sizes[c], 1)
            ):
                mapping[int(r)] = old_numbers[c]
    # never hand out a number an earlier cluster had: a rule aimed at it must not
    # silently start targeting someone else
    used = set(mapping.values()) | set(taken) | set(old_numbers)
    nxt = 1
    for r in range(k):
        if r not in mapping:
            while nxt in used:
                nxt += 1
            mapping[r] = nxt
            used.add(nxt)
    return mapping
