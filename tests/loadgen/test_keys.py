"""Key distributions: zipf skew as the formula says, uniform flat, reproducible."""

import random
from collections import Counter

import pytest

from loadgen.keys import MAX_KEYS, UniformKeys, ZipfKeys

DRAWS = 50_000


def frequencies(sampler, draws=DRAWS) -> Counter:
    return Counter(sampler.next() for _ in range(draws))


def test_zipf_draws_stay_in_range():
    counts = frequencies(ZipfKeys(50, 1.2, random.Random(1)), 5_000)
    assert min(counts) >= 1 and max(counts) <= 50


def test_zipf_top_keys_match_their_probabilities():
    sampler = ZipfKeys(1000, 1.0, random.Random(7))
    counts = frequencies(sampler)
    # P(key 1) = 1 / H_1000 ~ 0.1336; allow 5 standard deviations of sampling noise.
    for key in (1, 2, 3, 10):
        p = sampler.probability(key)
        sigma = (p * (1 - p) / DRAWS) ** 0.5
        assert abs(counts[key] / DRAWS - p) < 5 * sigma, key
    assert sampler.probability(1) == pytest.approx(1 / sum(1 / k for k in range(1, 1001)))


def test_zipf_rank_one_is_about_twice_rank_two_at_skew_one():
    counts = frequencies(ZipfKeys(1000, 1.0, random.Random(3)))
    assert 1.8 < counts[1] / counts[2] < 2.2


def test_higher_skew_concentrates_traffic():
    mild = frequencies(ZipfKeys(1000, 0.6, random.Random(5)), 20_000)
    steep = frequencies(ZipfKeys(1000, 1.4, random.Random(5)), 20_000)
    top10 = lambda c: sum(c[k] for k in range(1, 11))  # noqa: E731
    assert top10(steep) > 2 * top10(mild)


def test_zipf_skew_zero_is_uniform():
    sampler = ZipfKeys(10, 0.0, random.Random(11))
    counts = frequencies(sampler, 20_000)
    assert all(abs(counts[k] / 20_000 - 0.1) < 0.015 for k in range(1, 11))


def test_uniform_is_flat_and_in_range():
    counts = frequencies(UniformKeys(20, random.Random(2)), 20_000)
    assert set(counts) == set(range(1, 21))
    assert all(abs(n / 20_000 - 0.05) < 0.012 for n in counts.values())


def test_same_seed_same_keys():
    a = ZipfKeys(100, 1.1, random.Random(42))
    b = ZipfKeys(100, 1.1, random.Random(42))
    assert [a.next() for _ in range(100)] == [b.next() for _ in range(100)]


@pytest.mark.parametrize("n, s", [(0, 1.0), (MAX_KEYS + 1, 1.0), (10, -0.5), (10, 11.0)])
def test_bad_parameters_are_rejected(n, s):
    with pytest.raises(ValueError):
        ZipfKeys(n, s, random.Random())


def test_probability_outside_range_is_zero():
    assert ZipfKeys(5, 1.0, random.Random()).probability(6) == 0.0
    assert UniformKeys(5, random.Random()).probability(0) == 0.0
