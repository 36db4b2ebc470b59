"""Outlier handling, scaling and optional PCA, fitted once and stored as plain JSON.

Plain numbers rather than a pickled pipeline: a clustering's transform is shown in the
admin, applied in real time to single profiles, and read back by any later version.

Outliers (per feature, bounds from the fitting data):
- `iqr_clip` / `iqr_remove`: [Q1 - 1.5 IQR, Q3 + 1.5 IQR];
- `zscore_clip` / `zscore_remove`: mean ± 3 standard deviations;
- `*_clip` pulls values to the bounds; `*_remove` leaves profiles with any value
  outside them out of the fit (they are still assigned afterwards, values clipped).
A feature whose IQR is 0 (most profiles share one value, e.g. no purchases) would clip
every other value to that one; its bounds are the 0.5th and 99.5th percentiles instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

OUTLIER_METHODS = ("none", "iqr_clip", "iqr_remove", "zscore_clip", "zscore_remove")
SCALINGS = ("standard", "robust")


@dataclass
class Transform:
    names: list[str]
    low: list[float]
    high: list[float]
    center: list[float]
    scale: list[float]
    pca_mean: list[float] | None = None
    pca_components: list[list[float]] | None = None  # (components, features)

    def apply(self, X: np.ndarray) -> np.ndarray:
        Z = (np.clip(X, self.low, self.high) - np.asarray(self.center)) / np.asarray(self.scale)
        if self.pca_components is not None and self.pca_mean is not None:
            Z = (Z - np.asarray(self.pca_mean)) @ np.asarray(self.pca_components).T
        return np.asarray(Z, dtype=np.float64)

    def unscale(self, Z: np.ndarray) -> np.ndarray:
        """Model-space points back to feature units (centroids for people to read)."""
        if self.pca_components is not None and self.pca_mean is not None:
            Z = Z @ np.asarray(self.pca_components) + np.asarray(self.pca_mean)
        return np.asarray(Z * np.asarray(self.scale) + np.asarray(self.center), dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transform:
        return cls(**data)


@dataclass
class OutlierReport:
    method: str
    clipped_values: int
    removed_profiles: int
    profiles: int


def _bounds(X: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    if method == "none" or len(X) == 0:
        big = np.full(X.shape[1], 1e300)  # finite: the bounds are stored as JSON
        return -big, big
    if method.startswith("iqr"):
        q1, q3 = np.percentile(X, [25, 75], axis=0)
        iqr = q3 - q1
        low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
        flat = iqr == 0
        if flat.any():
            p_lo, p_hi = np.percentile(X[:, flat], [0.5, 99.5], axis=0)
            low[flat], high[flat] = p_lo, p_hi
        return low, high
    mean, std = X.mean(axis=0), X.std(axis=0)
    return mean - 3 * std, mean + 3 * std


def transform_fit(
    X: np.ndarray,
    names: list[str],
    *,
    scaling: str = "robust",
    outliers: str = "iqr_clip",
    pca_components: int | None = None,
    seed: int = 0,
) -> tuple[Transform, np.ndarray, OutlierReport]:
    """Fit the transform on X; returns it, the mask of rows used for fitting models
    (all but removed outliers) and what the outlier step did."""
    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)}")
    if outliers not in OUTLIER_METHODS:
        raise ValueError(f"outliers must be one of {', '.join(OUTLIER_METHODS)}")
    low, high = _bounds(X, outliers)
    outside = np.less(X, low) | np.greater(X, high)
    keep = np.ones(len(X), dtype=bool)
    if outliers.endswith("_remove"):
        keep = ~outside.any(axis=1)
        if keep.sum() < max(10, len(X) // 10):  # would remove nearly everyone: clip instead
            keep = np.ones(len(X), dtype=bool)
    report = OutlierReport(
        method=outliers,
        clipped_values=int(outside[keep].sum()),
        removed_profiles=int((~keep).sum()),
        profiles=len(X),
    )
    clipped = np.clip(X[keep], low, high)
    if scaling == "standard":
        center, scale = clipped.mean(axis=0), clipped.std(axis=0)
    else:
        center = np.median(clipped, axis=0)
        q1, q3 = np.percentile(clipped, [25, 75], axis=0)
        scale = q3 - q1
        flat = scale == 0
        scale[flat] = clipped.std(axis=0)[flat]
    scale = np.where(scale > 1e-12, scale, 1.0)
    transform = Transform(
        names=list(names),
        low=[float(v) for v in low],
        high=[float(v) for v in high],
        center=[float(v) for v in center],
        scale=[float(v) for v in scale],
    )
    if pca_components:
        from sklearn.decomposition import PCA

        Z = transform.apply(X[keep])
        n = max(1, min(int(pca_components), Z.shape[1], max(1, len(Z) - 1)))
        pca = PCA(n_components=n, random_state=seed).fit(Z)
        transform.pca_mean = [float(v) for v in pca.mean_]
        transform.pca_components = [[float(v) for v in row] for row in pca.components_]
    return transform, keep, report
