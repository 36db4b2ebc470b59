"""Assignment hashing agrees with GrowthBook's v2 hash and splits traffic evenly."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from experiments.hashing import bucket_ranges, choose_variant, fnv32a, hash_v2, in_namespace

# Version-2 vectors from GrowthBook's SDK test cases (sdk-js/test/cases.json).
GROWTHBOOK_V2_CASES = [
    ("seed", "a", 0.0505),
    ("seed", "b", 0.2696),
    ("foo", "ab", 0.2575),
    ("foo", "def", 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 0.124),
    ("90850943850283058242805", "123", 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 0.0128),
]

# Computed under Node.js with the JS SDK's algorithm (charCodeAt, i.e. UTF-16 code units):
# [seed, id, fnv32a(seed + id), hash_v2(seed, id)].
NON_ASCII_CASES = [
    ("seed", "Ösel", 782775262, 0.7373),
    ("seed", "日本語", 1710063553, 0.4482),
    ("exp-1", "😀", 609670127, 0.5997),
    ("exp-1", "user-😀-é", 2117327715, 0.4125),
    ("", "\U0010ffff", 4180159651, 0.7517),
    ("ключ", "пользователь", 2723423410, 0.5581),
]


def _fnv32a_reference(code_units: list[int]) -> int:
    h = 0x811C9DC5
    for c in code_units:
        h ^= c
        h = (h * 0x01000193) % 2**32
    return h


def _utf16_units(s: str) -> list[int]:
    units = []
    for ch in s:
        cp = ord(ch)
        if cp >= 0x10000:
            cp -= 0x10000
            units += [0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)]
        else:
            units.append(cp)
    return units


def test_required_growthbook_checks():
    # given / when / then: the three values the brief names
    assert hash_v2("seed", "a") == 0.0505
    assert hash_v2("foo", "ab") == 0.2575
    assert hash_v2("90850943850283058242805", "123") == 0.7516


@pytest.mark.parametrize(("seed", "unit_id", "expected"), GROWTHBOOK_V2_CASES)
def test_growthbook_sdk_vectors(seed, unit_id, expected):
    assert hash_v2(seed, unit_id) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    # Canonical FNV-1a 32-bit values; ASCII code units equal the bytes.
    [("", 0x811C9DC5), ("a", 0xE40C292C), ("foobar", 0xBF9CF968)],
)
def test_fnv32a_reference_values(text, expected):
    assert fnv32a(text) == expected


@pytest.mark.parametrize(("seed", "unit_id", "fnv", "expected"), NON_ASCII_CASES)
def test_non_ascii_ids_hash_like_javascript(seed, unit_id, fnv, expected):
    assert fnv32a(seed + unit_id) == fnv
    assert hash_v2(seed, unit_id) == expected


def test_astral_character_counts_as_two_surrogate_code_units():
    # given an emoji (U+1F600), which UTF-16 stores as the pair D83D DE00
    emoji = "😀"
    # then the hash runs over both surrogates, not over the code point or UTF-8 bytes
    assert fnv32a(emoji) == _fnv32a_reference([0xD83D, 0xDE00])
    assert fnv32a(emoji) != _fnv32a_reference([0x1F600])
    assert fnv32a(emoji) != _fnv32a_reference(list(emoji.encode("utf-8")))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_fnv32a_matches_code_unit_reference(s):
    assert fnv32a(s) == _fnv32a_reference(_utf16_units(s))


@settings(max_examples=200, deadline=None)
@given(seed=st.text(max_size=20), unit_id=st.text(max_size=20))
def test_hash_is_deterministic_and_in_range(seed, unit_id):
    first = hash_v2(seed, unit_id)
    assert hash_v2(seed, unit_id) == first
    assert 0.0 <= first < 1.0
    assert first == round(first * 10000) / 10000


def _hashes(count: int) -> list[float]:
    return [hash_v2("checkout-redesign", f"user-{i}") for i in range(count)]


@pytest.fixture(scope="module")
def hashes() -> list[float]:
    return _hashes(100_000)


def test_uniform_over_ten_equal_buckets(hashes):
    # given ten equal variants
    ranges = bucket_ranges([0.1] * 10)
    # when 100,000 ids are assigned
    counts = Counter(choose_variant(h, ranges) for h in hashes)
    # then every id lands somewhere and the split is consistent with uniform
    assert -1 not in counts
    observed = [counts[i] for i in range(10)]
    assert stats.chisquare(observed).pvalue > 0.001


def test_uniform_over_unequal_weights(hashes):
    weights = [0.2, 0.3, 0.5]
    ranges = bucket_ranges(weights)
    counts = Counter(choose_variant(h, ranges) for h in hashes)
    observed = [counts[i] for i in range(3)]
    expected = [w * len(hashes) for w in weights]
    assert sum(observed) == len(hashes)
    assert stats.chisquare(observed, expected).pvalue > 0.001


def test_reduced_coverage_excludes_the_right_share(hashes):
    ranges = bucket_ranges([0.5, 0.5], coverage=0.4)
    counts = Counter(choose_variant(h, ranges) for h in hashes)
    observed = [counts[-1], counts[0], counts[1]]
    expected = [0.6 * len(hashes), 0.2 * len(hashes), 0.2 * len(hashes)]
    assert stats.chisquare(observed, expected).pvalue > 0.001


@pytest.mark.parametrize(
    ("weights", "coverage", "expected"),
    # GrowthBook's getBucketRanges cases that have valid weights and coverage.
    [
        ([0.5, 0.5], 1, [(0, 0.5), (0.5, 1)]),
        ([0.5, 0.5], 0.5, [(0, 0.25), (0.5, 0.75)]),
        ([0.5, 0.5], 0, [(0, 0), (0.5, 0.5)]),
        ([0.25] * 4, 1, [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]),
        ([0.4, 0.6], 1, [(0, 0.4), (0.4, 1)]),
        ([0.2, 0.3, 0.5], 1, [(0, 0.2), (0.2, 0.5), (0.5, 1)]),
        ([0.2, 0.3, 0.5], 0.2, [(0, 0.04), (0.2, 0.26), (0.5, 0.6)]),
    ],
)
def test_bucket_ranges(weights, coverage, expected):
    ranges = bucket_ranges(weights, coverage)
    assert len(ranges) == len(expected)
    for (start, end), (want_start, want_end) in zip(ranges, expected, strict=True):
        assert start == pytest.approx(want_start, abs=1e-12)
        assert end == pytest.approx(want_end, abs=1e-12)


@pytest.mark.parametrize(
    ("weights", "coverage", "message"),
    [
        ([0.4, 0.5], 1.0, "sum to 1"),
        ([0.7, 0.6], 1.0, "sum to 1"),
        ([0.4, 0.5999], 1.0, "sum to 1"),
        ([1.2, -0.2], 1.0, "non-negative"),
        ([float("nan"), 1.0], 1.0, "non-negative"),
        ([], 1.0, "at least one"),
        ([0.5, 0.5], 1.5, "coverage"),
        ([0.5, 0.5], -0.1, "coverage"),
    ],
)
def test_bucket_ranges_rejects_bad_input(weights, coverage, message):
    with pytest.raises(ValueError, match=message):
        bucket_ranges(weights, coverage)


def test_weights_within_tolerance_are_accepted():
    assert bucket_ranges([0.3333333, 0.3333333, 0.3333334])[2][1] == pytest.approx(1.0)


def test_choose_variant_boundaries():
    ranges = [(0.0, 0.5), (0.5, 1.0)]
    assert choose_variant(0.0, ranges) == 0
    assert choose_variant(0.4999, ranges) == 0
    assert choose_variant(0.5, ranges) == 1  # start inclusive
    assert choose_variant(1.0, ranges) == -1  # end exclusive
    assert choose_variant(0.3, [(0.0, 0.25), (0.5, 0.75)]) == -1  # outside coverage


def test_in_namespace():
    assert in_namespace(0.4, 0.4, 0.6)
    assert in_namespace(0.5999, 0.4, 0.6)
    assert not in_namespace(0.6, 0.4, 0.6)
    assert not in_namespace(0.3999, 0.4, 0.6)


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=6).filter(
        lambda ws: sum(ws) > 0
    ),
    coverage=st.floats(min_value=0, max_value=1),
    n=st.integers(min_value=0, max_value=9999).map(lambda k: k / 10000),
)
def test_each_hash_value_has_at_most_one_variant(weights, coverage, n):
    # given integer shares turned into weights summing to 1
    shares = [w / sum(weights) for w in weights]
    ranges = bucket_ranges(shares, coverage)
    hits = [i for i, (start, end) in enumerate(ranges) if start <= n < end]
    # then choose_variant picks the single containing range, or none
    assert len(hits) <= 1
    assert choose_variant(n, ranges) == (hits[0] if hits else -1)
    if coverage == 1 and n < ranges[-1][1]:
        assert choose_variant(n, ranges) != -1
