"""Engine decisions that need no network: shares of the load, the mix, unique {seq}."""

from collections import Counter

from loadgen.engine import Engine, split_evenly
from loadgen.profile import parse_profile

MIX = parse_profile(
    """
    users = 5
    [[requests]]
    name = "read"
    path = "/r/{key}"
    weight = 9
    [[requests]]
    name = "write"
    method = "POST"
    path = "/w"
    body = "{seq}"
    """
)


def test_users_are_split_evenly_over_workers():
    assert [split_evenly(5, 2, i) for i in range(2)] == [3, 2]
    assert sum(split_evenly(101, 7, i) for i in range(7)) == 101
    assert [Engine("http://h", MIX, worker=i, workers=2).users for i in range(2)] == [3, 2]


def test_request_mix_follows_the_weights():
    engine = Engine("http://h", MIX, seed=1)
    counts = Counter(engine._pick().name for _ in range(20_000))
    assert abs(counts["read"] / 20_000 - 0.9) < 0.01


def test_seq_is_unique_across_workers():
    spec = MIX.requests[1]
    seen = []
    for worker in range(3):
        engine = Engine("http://h", MIX, worker=worker, workers=3)
        seen += [engine._values(spec)["seq"] for _ in range(50)]
    assert sorted(seen) == list(range(150))


def test_keys_are_drawn_only_when_a_template_uses_them():
    engine = Engine("http://h", MIX, seed=3)
    assert engine._values(MIX.requests[1])["key"] == 0
    assert 1 <= engine._values(MIX.requests[0])["key"] <= MIX.keys.n
