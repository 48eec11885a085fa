"""``topologies.autoscale_policy``: the worker count a queue's depth asks for, over time."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from topologies.autoscale_policy import (
    DOWN,
    HOLD,
    MAX_WORKERS,
    UP,
    RulesError,
    ScalingPolicy,
    ScalingRules,
)

RULES = ScalingRules(min_workers=1, max_workers=5, jobs_per_worker=4, cooldown_s=10)


def test_desired_is_jobs_over_jobs_per_worker_rounded_up():
    assert [RULES.desired(ready, 0) for ready in (0, 1, 4, 5, 8, 9)] == [1, 1, 1, 2, 2, 3]


def test_reserved_jobs_count_as_demand():
    assert RULES.desired(ready=0, reserved=12) == 3
    assert RULES.desired(ready=2, reserved=6) == 2


def test_desired_stays_within_min_and_max():
    assert RULES.desired(10_000, 10_000) == 5
    assert ScalingRules(min_workers=2, max_workers=5).desired(0, 0) == 2


def test_negative_or_absurd_figures_do_not_escape_the_bounds():
    assert RULES.desired(-5, -5) == 1
    assert RULES.desired(1 << 62, 1 << 62) == 5


@pytest.mark.parametrize("kwargs", [
    {"min_workers": 3, "max_workers": 2},
    {"min_workers": -1},
    {"max_workers": MAX_WORKERS + 1},
    {"jobs_per_worker": 0},
    {"cooldown_s": -1},
])  # fmt: skip
def test_impossible_rules_are_refused(kwargs):
    with pytest.raises(RulesError):
        ScalingRules(**kwargs)


def test_a_backlog_scales_up_at_once_to_the_desired_count():
    policy = ScalingPolicy(RULES, now=0)
    decision = policy.decide(ready=17, reserved=0, workers=1, now=0.5)
    assert (decision.action, decision.target, decision.desired) == (UP, 5, 5)


def test_scale_down_waits_for_the_cool_down_then_goes_one_step_at_a_time():
    policy = ScalingPolicy(RULES, now=0)
    assert policy.decide(20, 0, workers=1, now=1).target == 5  # up at once, at t=1
    # The queue empties at t=2: 1 worker would do, but not before the cool-down.
    for t in (2, 5, 10.9):
        decision = policy.decide(0, 0, workers=5, now=t)
        assert (decision.action, decision.target, decision.desired) == (HOLD, 5, 1)
    decision = policy.decide(0, 0, workers=5, now=12)
    assert (decision.action, decision.target) == (DOWN, 4)
    assert policy.decide(0, 0, workers=4, now=13).action == HOLD  # a new cool-down
    assert policy.decide(0, 0, workers=4, now=22).target == 3


def test_a_new_burst_during_the_cool_down_cancels_the_scale_down():
    policy = ScalingPolicy(RULES, now=0)
    assert policy.decide(0, 0, workers=3, now=1).action == HOLD  # lower wanted from t=1
    assert policy.decide(0, 12, workers=3, now=8).action == HOLD  # busy again: 3 wanted
    # Lower wanted again from t=9: the clock restarts there, not at t=1.
    assert policy.decide(0, 0, workers=3, now=9).action == HOLD
    assert policy.decide(0, 0, workers=3, now=15).action == HOLD
    assert policy.decide(0, 0, workers=3, now=19).action == DOWN


def test_a_dead_worker_below_the_minimum_is_replaced_at_once():
    policy = ScalingPolicy(ScalingRules(min_workers=2, max_workers=4), now=0)
    decision = policy.decide(0, 0, workers=1, now=0.1)
    assert (decision.action, decision.target) == (UP, 2)


def test_a_zero_cool_down_still_steps_down_one_worker_per_decision():
    policy = ScalingPolicy(ScalingRules(min_workers=0, max_workers=4, cooldown_s=0), now=0)
    targets = [policy.decide(0, 0, workers=w, now=t).target for t, w in enumerate((4, 3, 2, 1))]
    assert targets == [3, 2, 1, 0]
    assert policy.decide(0, 0, workers=0, now=9).action == HOLD


observations = st.lists(
    st.tuples(
        st.integers(0, 200),  # ready
        st.integers(0, 50),  # reserved
        st.floats(0.0, 5.0),  # seconds since the previous decision
        st.integers(-1, 1),  # a worker dies (-1) or an extra survives (+1) before it
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    bounds=st.tuples(st.integers(0, 6), st.integers(0, 6)).map(sorted),
    per_worker=st.floats(0.5, 20),
    cooldown_s=st.floats(0, 20),
    seen=observations,
)
def test_the_pool_never_leaves_its_bounds_and_never_flaps(bounds, per_worker, cooldown_s, seen):
    rules = ScalingRules(bounds[0], bounds[1], per_worker, cooldown_s)
    now = 0.0
    policy = ScalingPolicy(rules, now)
    workers = rules.min_workers
    changes: list[tuple[float, str]] = []
    for ready, reserved, step, drift in seen:
        now += step
        observed = max(0, workers + drift)
        decision = policy.decide(ready, reserved, observed, now)
        # Within the bounds, except a pool found above max, which comes down step by step.
        assert rules.min_workers <= decision.target <= rules.max_workers or (
            observed > rules.max_workers and decision.target in (observed, observed - 1)
        )
        if decision.action == UP:
            assert decision.target == decision.desired > observed
        elif decision.action == DOWN:
            assert decision.target == observed - 1 >= decision.desired
            # No scale-down within a cool-down of any earlier change, up or down.
            assert all(now - at >= cooldown_s for at, _ in changes)
        else:
            assert decision.target == observed
        if decision.action != HOLD:
            changes.append((now, decision.action))
        workers = decision.target


@settings(max_examples=200, deadline=None)
@given(start=st.integers(1, 6), ready=st.integers(0, 500))
def test_with_a_steady_queue_the_pool_settles_on_the_desired_count(start, ready):
    rules = ScalingRules(1, 6, 4, 5)
    policy = ScalingPolicy(rules, 0)
    workers = start
    for t in range(1, 60):
        workers = policy.decide(ready, 0, workers, float(t)).target
    assert workers == rules.desired(ready, 0)
