"""A trained version's models as one compact binary (numpy's npz: item ids, and each
neighbour list as CSR arrays), stored on its ModelVersion row."""

from __future__ import annotations

import io

import numpy as np

from recommendations.algorithms import TopK
from recommendations.ranking import Models

PARTS = ("item_item", "bought_together", "next_item", "svd")


def dump(models: Models) -> bytes:
    arrays: dict[str, np.ndarray] = {
        "item_ids": np.asarray(models.item_ids, dtype=np.str_),
        "trending": models.trending.astype(np.float32),
        "popularity": models.popularity.astype(np.float32),
        "item_model": np.asarray(models.item_model, dtype=np.str_),
    }
    for name in PARTS:
        top = models.model(name)
        arrays[f"{name}.indptr"] = top.indptr
        arrays[f"{name}.indices"] = top.indices
        arrays[f"{name}.scores"] = top.scores
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load(blob: bytes, *, version: int, blend: dict[str, float], personal_ok: bool = True) -> Models:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        tops = {
            name: TopK(z[f"{name}.indptr"], z[f"{name}.indices"], z[f"{name}.scores"])
            for name in PARTS
            if f"{name}.indptr" in z.files  # versions trained before a model existed
        }
        item_ids = [str(s) for s in z["item_ids"].tolist()]
        return Models(
            version=version,
            item_ids=item_ids,
            item_item=tops["item_item"],
            bought_together=tops["bought_together"],
            next_item=tops["next_item"],
            trending=z["trending"],
            popularity=z["popularity"],
            svd=tops.get("svd"),
            item_model=str(z["item_model"]) if "item_model" in z.files else "item_item",
            blend=blend,
            personal_ok=personal_ok,
        )
