import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.common.backoff import Backoff


def test_without_jitter_the_pauses_double_up_to_the_cap_and_reset_starts_over():
    backoff = Backoff(0.1, 0.5, rng=None)
    assert [round(backoff.next(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_jitter_draws_between_half_and_all_of_the_doubled_pause():
    draws = iter([0.0, 1.0, 0.5])
    backoff = Backoff(1.0, 8.0, rng=lambda: next(draws))
    assert [backoff.next() for _ in range(3)] == [0.5, 2.0, 3.0]


@given(st.floats(0.001, 10), st.floats(1, 100), st.lists(st.floats(0, 1), max_size=30),
       st.integers(0, 30))  # fmt: skip
def test_every_pause_is_within_half_and_all_of_its_unjittered_value(first, factor, draws, resets):
    jittered = Backoff(first, first * factor, rng=iter(draws).__next__)
    plain = Backoff(first, first * factor, rng=None)
    for i in range(len(draws)):
        if i == resets:
            jittered.reset()
            plain.reset()
        expected = plain.next()
        assert expected / 2 <= jittered.next() <= expected <= first * factor


@pytest.mark.parametrize("first, cap", [(0, 1), (-1, 1), (2, 1)])
def test_a_pause_that_cannot_grow_sensibly_is_refused(first, cap):
    with pytest.raises(ValueError):
        Backoff(first, cap)
