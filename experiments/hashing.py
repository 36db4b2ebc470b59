"""Deterministic assignment of units to variants, compatible with GrowthBook. No Django imports.

`hash_v2` is GrowthBook's documented version-2 hash (the JS SDK's `hash(seed, value, 2)`):
FNV-1a 32-bit over the UTF-16 code units of `seed + id`, hashed again as a decimal string,
reduced to one of 10,000 buckets. Using the same hash means a unit lands in the same
variant here and in any GrowthBook SDK given the same seed, weights and coverage.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

_FNV_OFFSET_BASIS = 0x811C9DC5
_FNV_PRIME = 0x01000193
_MASK_32 = 0xFFFFFFFF
_WEIGHT_TOLERANCE = 1e-6


def _utf16_code_units(s: str) -> tuple[int, ...]:
    # JavaScript strings are UTF-16: a character outside the BMP is two surrogate units.
    data = s.encode("utf-16-le", "surrogatepass")
    return struct.unpack(f"<{len(data) // 2}H", data)


def fnv32a(s: str) -> int:
    """FNV-1a 32-bit hash of the UTF-16 code units of `s` (as JavaScript's charCodeAt sees them)."""
    h = _FNV_OFFSET_BASIS
    for unit in _utf16_code_units(s):
        h ^= unit
        h = (h * _FNV_PRIME) & _MASK_32
    return h


def hash_v2(seed: str, unit_id: str) -> float:
    """GrowthBook's v2 hash of a unit id under a seed: a number in [0, 1) in steps of 0.0001."""
    return (fnv32a(str(fnv32a(seed + unit_id))) % 10000) / 10000


def bucket_ranges(weights: Sequence[float], coverage: float = 1.0) -> list[tuple[float, float]]:
    """The [start, end) hash range of each variant, as GrowthBook's getBucketRanges builds them.

    Variant i starts at the sum of the weights before it and covers `coverage * weights[i]`,
    so lowering coverage drops units from every variant without moving anyone between variants.
    Weights must be non-negative and sum to 1 (within 1e-6); coverage must be in [0, 1].
    """
    if not weights:
        raise ValueError("weights must name at least one variant")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and non-negative, got {list(weights)}")
    total = math.fsum(weights)
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise ValueError(f"weights must sum to 1, got {list(weights)} summing to {total}")
    if not (math.isfinite(coverage) and 0.0 <= coverage <= 1.0):
        raise ValueError(f"coverage must be between 0 and 1, got {coverage}")
    ranges = []
    cumulative = 0.0
    for w in weights:
        start = cumulative
        cumulative += w
        ranges.append((start, start + coverage * w))
    return ranges


def choose_variant(n: float, ranges: Sequence[tuple[float, float]]) -> int:
    """Index of the range holding hash value `n` (start inclusive, end exclusive), or -1 if none."""
    for i, (start, end) in enumerate(ranges):
        if start <= n < end:
            return i
    return -1


def in_namespace(hash_value: float, start: float, end: float) -> bool:
    """Whether a unit's namespace hash falls in the experiment's [start, end) slice of the namespace."""
    return start <= hash_value < end
