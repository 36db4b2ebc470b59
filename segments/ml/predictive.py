"""Predictive models: train, cross-validate, evaluate on held-out profiles, explain.
Pure computation on feature matrices (segments.ml.features) and 0/1 targets.

- `random_forest`: RandomForestClassifier (balanced class weights, 200 trees);
- `gradient_boosting`: HistGradientBoostingClassifier (fast on 100k+ rows);
- `logistic_regression`: standardized features, balanced class weights.
The held-out set is a stratified 20 % of the profiles, never seen by the fit or by the
cross-validation; its figures decide whether a new version replaces the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

ALGORITHMS = ("random_forest", "gradient_boosting", "logistic_regression")
HOLDOUT_SHARE = 0.2
CV_FOLDS = 5
THRESHOLDS = [round(t / 100, 2) for t in range(0, 101)]


class TrainingFailed(ValueError):
    """The data cannot train this model (said in words)."""


def estimator(algorithm: str, seed: int = 0) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if algorithm == "random_forest":
        return RandomForestClassifier(
            n_estimators=200,
            min_samples_leaf=5,
            class_weight="balanced",
            n_jobs=2,
            random_state=seed,
        )
    if algorithm == "gradient_boosting":
        return HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed)
    if algorithm == "logistic_regression":
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
        )
    raise TrainingFailed(f"algorithm must be one of {', '.join(ALGORITHMS)}")


@dataclass
class Trained:
    model: Any
    metrics: dict[str, Any]
    holdout: np.ndarray  # row indices of the held-out profiles


def train(
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    *,
    algorithm: str,
    threshold: float = 0.5,
    seed: int = 0,
    progress: Callable[[str], object] | None = None,
) -> Trained:
    """Cross-validate on the training part, fit it, evaluate on the held-out part."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    positives = int(y.sum())
    negatives = len(y) - positives
    if min(positives, negatives) < 2 * CV_FOLDS:
        raise TrainingFailed(
            f"{positives} positive and {negatives} negative profiles: at least "
            f"{2 * CV_FOLDS} of each are needed"
        )
    idx = np.arange(len(y))
    train_idx, hold_idx = train_test_split(
        idx, test_size=HOLDOUT_SHARE, stratify=y, random_state=seed
    )
    if progress:
        progress("cross-validating")
    cv = cross_val_score(
        estimator(algorithm, seed),
        X[train_idx],
        y[train_idx],
        cv=StratifiedKFold(n_splits=CV_FOLDS, shuffle=True, random_state=seed),
        scoring="roc_auc",
    )
    if progress:
        progress("fitting")
    model = estimator(algorithm, seed).fit(X[train_idx], y[train_idx])
    if progress:
        progress("evaluating on held-out profiles")
    metrics = evaluate(model, X[hold_idx], y[hold_idx], threshold=threshold)
    metrics["cv_auc"] = [float(v) for v in cv]
    metrics["cv_auc_mean"] = float(np.mean(cv))
    metrics["cv_auc_std"] = float(np.std(cv))
    metrics["profiles"] = len(y)
    metrics["positives"] = positives
    metrics["base_rate"] = positives / len(y)
    metrics["train_profiles"] = len(train_idx)
    metrics["holdout_profiles"] = len(hold_idx)
    metrics["importances"] = importances(model, X[hold_idx], y[hold_idx], names, seed=seed)
    return Trained(model=model, metrics=metrics, holdout=hold_idx)


def scores_of(model: Any, X: np.ndarray) -> np.ndarray:
    if len(X) == 0:
        return np.zeros(0)
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


def auc_of(model: Any, X: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, scores_of(model, X)))


def evaluate(model: Any, X: np.ndarray, y: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """What the model's page shows: AUC and the ROC curve, precision/recall by threshold,
    calibration by decile of predicted probability, the Brier score."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

    p = scores_of(model, X)
    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, num=min(len(fpr), 120)).astype(int))
    by_threshold: list[dict[str, Any]] = []
    positives = max(int(y.sum()), 1)
    for t in THRESHOLDS:
        chosen = p >= t
        tp = int((chosen & (y == 1)).sum())
        n = int(chosen.sum())
        by_threshold.append(
            {
                "threshold": t,
                "selected": n,
                "precision": tp / n if n else None,
                "recall": tp / positives,
            }
        )
    at = next(r for r in by_threshold if float(r["threshold"]) >= round(threshold, 2))
    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    return {
        "holdout_auc": float(roc_auc_score(y, p)),
        "roc": [[float(fpr[i]), float(tpr[i])] for i in keep],
        "by_threshold": by_threshold,
        "threshold": threshold,
        "precision_at_threshold": at["precision"],
        "recall_at_threshold": at["recall"],
        "calibration": [[float(m), float(f)] for m, f in zip(mean_pred, frac_pos, strict=True)],
        "brier": float(brier_score_loss(y, p)),
    }


def importances(
    model: Any, X: np.ndarray, y: np.ndarray, names: list[str], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Permutation importance on held-out profiles (the drop in AUC when a feature's
    values are shuffled): comparable across the three algorithms, unlike their own."""
    from sklearn.inspection import permutation_importance

    rows = min(len(X), 5_000)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=rows, replace=False)
    if len(set(y[idx].tolist())) < 2:
        return []
    result = permutation_importance(
        model, X[idx], y[idx], scoring="roc_auc", n_repeats=3, random_state=seed
    )
    out = [
        {"feature": name, "importance": float(m), "std": float(s)}
        for name, m, s in zip(names, result.importances_mean, result.importances_std, strict=True)
    ]
    return sorted(out, key=lambda r: -r["importance"])
