"""Consistent hashing: stable, balanced with virtual nodes, ~1/N keys move on a new group."""

from hypothesis import given, settings
from hypothesis import strategies as st

from components.shard.ring import Ring


def test_same_key_same_node_across_instances():
    a, b = Ring(["g1", "g2", "g3"]), Ring(["g3", "g1", "g2"])
    assert all(a.node_for(k) == b.node_for(k) for k in range(2000))


def test_virtual_nodes_even_out_the_shares():
    share = Ring([f"g{i}" for i in range(4)], vnodes=256).share()
    assert abs(sum(share.values()) - 1.0) < 1e-9
    assert all(0.15 < s < 0.35 for s in share.values()), share


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_adding_a_group_moves_about_one_in_n_plus_one_keys_all_to_it(n, seed):
    groups = [f"g{seed}-{i}" for i in range(n)]
    before, after = Ring(groups, vnodes=128), Ring([*groups, "new"], vnodes=128)
    keys = range(seed, seed + 4000)
    moved = [k for k in keys if before.node_for(k) != after.node_for(k)]
    assert all(after.node_for(k) == "new" for k in moved)  # nothing moves between old groups
    expected = len(keys) / (n + 1)
    assert 0.5 * expected < len(moved) < 1.6 * expected, (len(moved), expected)


def test_modulo_by_contrast_moves_most_keys():
    from components.shard.placement import Modulo

    a, b = Modulo(["g0", "g1", "g2", "g3"]), Modulo(["g0", "g1", "g2", "g3", "g4"])
    moved = sum(a.group_for(k) != b.group_for(k) for k in range(4000))
    assert moved > 0.7 * 4000
