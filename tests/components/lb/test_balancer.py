"""The balancer's policy, without sockets: distributions, health state, live pool changes."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from components.lb.balancer import DOWN, UP, Balancer


def pool(algorithm: str, *weights: int, **kwargs) -> Balancer:
    balancer = Balancer(algorithm, rng=random.Random(7), **kwargs)
    for i, weight in enumerate(weights or (1, 1, 1)):
        balancer.add(f"10.0.0.{i + 1}:80", weight)
    return balancer


def picks(balancer: Balancer, n: int, now: float = 0.0, **kwargs) -> list[str]:
    return [balancer.pick(now, **kwargs).address for _ in range(n)]


def test_round_robin_is_exact_and_ignores_weights():
    balancer = pool("round_robin", 5, 1, 1)
    assert picks(balancer, 6) == ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"] * 2


def test_smooth_weighted_round_robin_interleaves_like_nginx():
    balancer = pool("weighted_round_robin", 5, 1, 1)
    order = [a[-4] for a in picks(balancer, 7)]
    # nginx's documented sequence for weights 5,1,1: a a b a c a a.
    assert order == ["1", "1", "2", "1", "3", "1", "1"]


def test_weighted_proportions_hold_over_many_picks():
    balancer = pool("weighted_round_robin", 3, 2, 1)
    counts = Counter(picks(balancer, 600))
    assert counts == {"10.0.0.1:80": 300, "10.0.0.2:80": 200, "10.0.0.3:80": 100}


def test_least_conn_prefers_the_idle_backend():
    balancer = pool("least_conn", 1, 1, 1)
    busy = [balancer.get("10.0.0.1:80"), balancer.get("10.0.0.3:80")]
    for backend in busy:
        balancer.started(backend)
    assert set(picks(balancer, 5)) == {"10.0.0.2:80"}


def test_least_conn_accounts_for_weight():
    balancer = pool("least_conn", 1, 4)
    a, b = balancer.backends
    for _ in range(2):
        balancer.started(a)
    for _ in range(4):
        balancer.started(b)
    # a: 2/1 in flight per weight, b: 4/4. b is less loaded.
    assert balancer.pick(0.0) is b


def test_power_of_two_never_picks_the_busiest_of_three():
    balancer = pool("power_of_two")
    busiest = balancer.get("10.0.0.1:80")
    for _ in range(10):
        balancer.started(busiest)
    assert "10.0.0.1:80" not in picks(balancer, 100)


def test_ip_hash_is_sticky_and_spreads_clients():
    balancer = pool("ip_hash", 1, 1, 1)
    for client in ("192.0.2.1", "192.0.2.2", "198.51.100.7"):
        assert len(set(picks(balancer, 20, client=client))) == 1
    spread = {balancer.pick(0.0, client=f"10.1.{i}.{i}").address for i in range(60)}
    assert len(spread) == 3


def test_ip_hash_moves_only_the_dead_backends_clients():
    balancer = pool("ip_hash", 1, 1, 1)
    clients = [f"172.16.{i}.1" for i in range(60)]
    before = {c: balancer.pick(0.0, client=c).address for c in clients}
    balancer.set_state(balancer.get("10.0.0.2:80"), DOWN)
    after = {c: balancer.pick(0.0, client=c).address for c in clients}
    for client in clients:
        if before[client] != "10.0.0.2:80":
            assert after[client] == before[client]
        else:
            assert after[client] != "10.0.0.2:80"


def test_cookie_sticks_to_the_named_backend_and_falls_back_when_it_is_out():
    balancer = pool("cookie")
    target = balancer.get("10.0.0.3:80")
    assert set(picks(balancer, 10, cookie=target.cookie_id)) == {"10.0.0.3:80"}
    balancer.set_state(target, DOWN)
    assert "10.0.0.3:80" not in picks(balancer, 10, cookie=target.cookie_id)
    assert len(set(picks(balancer, 10, cookie="unknown"))) == 2


def test_no_eligible_backend_gives_none_without_panic():
    balancer = pool("round_robin", 1, panic_threshold_pct=0)
    balancer.set_state(balancer.get("10.0.0.1:80"), DOWN)
    assert balancer.pick(0.0) is None and not balancer.panicking(0.0)
    assert Balancer().pick(0.0) is None


# -- panic: too few healthy backends and health is ignored -----------------------------------


def test_below_the_threshold_every_non_draining_backend_is_picked():
    balancer = pool("round_robin", 1, 1, 1)  # default threshold: 50%
    balancer.set_state(balancer.get("10.0.0.1:80"), DOWN)
    assert not balancer.panicking(0.0)  # 2 of 3 healthy
    assert set(picks(balancer, 6)) == {"10.0.0.2:80", "10.0.0.3:80"}
    balancer.failed(balancer.get("10.0.0.2:80"), 0.0)
    balancer.failed(balancer.get("10.0.0.2:80"), 0.0)
    balancer.failed(balancer.get("10.0.0.2:80"), 0.0)  # max_fails 3: ejected
    assert balancer.panicking(1.0)  # 1 of 3 healthy < 50%
    assert set(picks(balancer, 6, now=1.0)) == {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
    assert not balancer.panicking(20.0)  # the ejection's cooldown is over: 2 of 3
    assert set(picks(balancer, 6, now=20.0)) == {"10.0.0.2:80", "10.0.0.3:80"}


def test_exactly_at_the_threshold_is_not_panic():
    balancer = pool("round_robin", 1, 1)
    balancer.set_state(balancer.get("10.0.0.1:80"), DOWN)
    assert not balancer.panicking(0.0)  # 1 of 2 is 50%: not below 50%
    assert set(picks(balancer, 4)) == {"10.0.0.2:80"}
    balancer.set_state(balancer.get("10.0.0.2:80"), DOWN)
    assert balancer.panicking(0.0) and len(set(picks(balancer, 4))) == 2


def test_drained_backends_neither_count_nor_serve_in_panic():
    balancer = pool("round_robin", 1, 1, 1, panic_threshold_pct=60)
    balancer.drain("10.0.0.3:80")
    balancer.set_state(balancer.get("10.0.0.1:80"), DOWN)
    assert balancer.panicking(0.0)  # 1 of 2 serving = 50% < 60%
    assert set(picks(balancer, 6)) == {"10.0.0.1:80", "10.0.0.2:80"}
    balancer.drain("10.0.0.2:80")
    assert balancer.panicking(0.0)  # 0 of 1
    assert set(picks(balancer, 3)) == {"10.0.0.1:80"}
    balancer.drain("10.0.0.1:80")
    assert balancer.pick(0.0) is None and not balancer.panicking(0.0)  # nothing serves


def test_a_retry_in_panic_still_avoids_the_first_choice():
    balancer = pool("round_robin", 1, 1)
    for backend in balancer.backends:
        balancer.set_state(backend, DOWN)
    first = balancer.get("10.0.0.1:80")
    assert {balancer.pick(0.0, exclude=first).address for _ in range(4)} == {"10.0.0.2:80"}
    assert balancer.pick(0.0, exclude=balancer.get("10.0.0.2:80")) is first


def test_threshold_100_panics_as_soon_as_one_is_out_and_bad_values_are_refused():
    balancer = pool("round_robin", 1, 1, panic_threshold_pct=100)
    assert not balancer.panicking(0.0)
    balancer.set_state(balancer.get("10.0.0.1:80"), DOWN)
    assert balancer.panicking(0.0) and len(set(picks(balancer, 4))) == 2
    with pytest.raises(ValueError):
        Balancer(panic_threshold_pct=101)


def test_exclude_skips_the_first_choice_for_a_retry():
    balancer = pool("round_robin", 1, 1)
    first = balancer.get("10.0.0.1:80")
    assert {balancer.pick(0.0, exclude=first).address for _ in range(4)} == {"10.0.0.2:80"}


def test_active_checks_need_fall_failures_to_mark_down_and_rise_to_come_back():
    balancer = pool("round_robin", 1, rise=2, fall=3, panic_threshold_pct=0)
    backend = balancer.backends[0]
    assert balancer.check_result(backend, False, 0) is None
    assert balancer.check_result(backend, False, 0) is None
    assert balancer.check_result(backend, False, 0) == DOWN
    assert balancer.pick(0.0) is None
    assert balancer.check_result(backend, True, 0) is None
    assert balancer.check_result(backend, False, 0) is None  # a failure resets the rise count
    assert balancer.check_result(backend, True, 0) is None
    assert balancer.check_result(backend, True, 0) == UP
    assert balancer.pick(0.0) is backend


def test_passive_failures_eject_for_the_cooldown_then_the_backend_returns():
    balancer = pool("round_robin", 1, 1, max_fails=2, cooldown_s=10)
    bad = balancer.get("10.0.0.1:80")
    assert not balancer.failed(bad, now=100)
    assert balancer.failed(bad, now=100)
    assert set(picks(balancer, 4, now=105)) == {"10.0.0.2:80"}
    assert "10.0.0.1:80" in picks(balancer, 4, now=110)
    assert bad.ejections == 1 and bad.errors == 2


def test_a_success_resets_the_consecutive_failure_count():
    balancer = pool("round_robin", 1, max_fails=2)
    backend = balancer.backends[0]
    balancer.failed(backend, 0)
    balancer.succeeded(backend)
    assert not balancer.failed(backend, 0)


def test_drain_stops_new_picks_and_re_adding_restores():
    balancer = pool("round_robin", 1, 1)
    balancer.drain("10.0.0.1:80")
    assert set(picks(balancer, 4)) == {"10.0.0.2:80"}
    balancer.add("10.0.0.1:80", 2)
    assert "10.0.0.1:80" in picks(balancer, 4)
    assert balancer.get("10.0.0.1:80").weight == 2


def test_remove_and_add_live():
    balancer = pool("weighted_round_robin", 1, 1)
    removed = balancer.remove("10.0.0.1:80")
    assert removed.removed and balancer.remove("10.0.0.1:80") is None
    assert set(picks(balancer, 3)) == {"10.0.0.2:80"}
    balancer.add("10.0.0.9:80", 1)
    assert set(picks(balancer, 4)) == {"10.0.0.2:80", "10.0.0.9:80"}


def test_unknown_algorithm_and_bad_weight_are_refused():
    with pytest.raises(ValueError):
        Balancer("random")
    with pytest.raises(ValueError):
        Balancer().add("h:1", 0)
