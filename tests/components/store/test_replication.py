"""The replication core on a fake network: subscriptions, acks, fencing, divergence.

Each node is a ``Node`` plus a list of (lsn, epoch) standing for its log; the "network"
is the test calling one node's ``do_*`` with another's messages, as 500 Lines' cluster
tests do. No sockets, no clock but the numbers passed in.
"""

import pytest

from components.store.replication import (
    LogView,
    NeedSnapshot,
    Node,
    Refuse,
    Role,
    Stream,
)


class FakeLog:
    def __init__(self, epochs=(), base=(0, 0)):
        self.base_lsn, self.base_epoch = base
        self.epochs = list(epochs)  # epochs[i] is the epoch of lsn base_lsn + 1 + i

    @property
    def last_lsn(self):
        return self.base_lsn + len(self.epochs)

    def append(self, epoch, count=1):
        self.epochs += [epoch] * count

    def view(self):
        def epoch_of(lsn):
            i = lsn - self.base_lsn - 1
            return self.epochs[i] if 0 <= i < len(self.epochs) else None

        return LogView(self.base_lsn, self.base_epoch, self.last_lsn, epoch_of)

    def position(self):
        return self.last_lsn, (self.epochs[-1] if self.epochs else self.base_epoch)


def primary(epoch=1):
    return Node("p", "p:1", Role.PRIMARY, epoch)


def replica(epoch=1, name="r"):
    return Node(name, f"{name}:1", Role.REPLICA, epoch, primary="p:1")


def subscribe(p, plog, r, rlog, now=0.0):
    return p.do_subscribe(r.name, r.api_addr, r.epoch, *rlog.position(), plog.view(), now)


def test_a_fresh_replica_streams_from_the_first_record():
    p, plog = primary(), FakeLog([1, 1, 1])
    r, rlog = replica(), FakeLog()
    assert subscribe(p, plog, r, rlog) == Stream(1)
    assert p.followers["r"].connected


def test_a_replica_that_is_behind_resumes_after_its_last_record():
    p, plog = primary(), FakeLog([1] * 10)
    assert subscribe(p, plog, replica(), FakeLog([1] * 4)) == Stream(5)


def test_acks_drive_lag_and_the_semi_sync_count():
    p, plog = primary(), FakeLog([1] * 10)
    for name in ("a", "b"):
        subscribe(p, plog, replica(name=name), FakeLog())
    assert p.do_ack("a", 1, 10, now=1.0)
    assert p.do_ack("b", 1, 6, now=1.0)
    assert p.acked_by(7) == 1 and p.acked_by(6) == 2
    assert p.lag(10) == {"a": 0, "b": 4}
    p.do_disconnect("a")
    assert p.acked_by(7) == 0  # a disconnected replica does not count for semi-sync


def test_acks_never_move_backwards():
    p, plog = primary(), FakeLog([1] * 10)
    subscribe(p, plog, replica(), FakeLog())
    p.do_ack("r", 1, 8, 0.0)
    p.do_ack("r", 1, 3, 0.0)
    assert p.followers["r"].acked_lsn == 8


def test_a_replica_ahead_of_the_primary_has_diverged():
    p, plog = primary(2), FakeLog([1, 1, 2])
    old_primary_log = FakeLog([1, 1, 1, 1, 1])
    assert isinstance(subscribe(p, plog, replica(2), old_primary_log), NeedSnapshot)


def test_same_lsn_different_epoch_has_diverged():
    # The old primary wrote lsn 3 in epoch 1 after the new one wrote its own lsn 3 in epoch 2.
    p, plog = primary(2), FakeLog([1, 1, 2, 2])
    assert isinstance(subscribe(p, plog, replica(2), FakeLog([1, 1, 1])), NeedSnapshot)


def test_a_replica_older_than_the_log_needs_a_snapshot():
    p, plog = primary(), FakeLog([1] * 5, base=(100, 1))
    assert isinstance(subscribe(p, plog, replica(), FakeLog([1] * 50)), NeedSnapshot)
    assert subscribe(p, plog, replica(), FakeLog([], base=(100, 1))) == Stream(101)


def test_a_replica_is_refused_by_a_node_that_is_not_primary():
    other = replica(name="q")
    decision = other.do_subscribe("r", "r:1", 1, 0, 0, FakeLog().view(), 0.0)
    assert decision == Refuse("not the primary", 1, "p:1")


def test_a_subscriber_from_a_higher_epoch_fences_the_old_primary():
    old = primary(1)
    decision = old.do_subscribe("r", "r:1", 2, 0, 0, FakeLog().view(), 0.0)
    assert isinstance(decision, Refuse)
    assert old.fenced_by == 2 and not old.writable


def test_an_ack_from_a_higher_epoch_fences_too():
    old, plog = primary(1), FakeLog([1])
    subscribe(old, plog, replica(), FakeLog())
    assert not old.do_ack("r", 3, 1, 0.0)
    assert old.fenced_by == 3


def test_replicas_refuse_streams_from_a_lower_epoch():
    r = replica(epoch=2)
    assert not r.do_records(1, now=5.0)
    assert r.do_records(2, now=5.0) and r.last_contact == 5.0
    assert r.do_records(3, now=6.0) and r.epoch == 3  # a newer primary is adopted


def test_promotion_raises_the_epoch_and_makes_the_node_writable():
    r = replica(epoch=4)
    assert r.promote() == 5
    assert r.writable and r.primary is None
    with pytest.raises(ValueError):
        r.promote(epoch=5)
    assert r.promote(epoch=9) == 9


def test_repoint_demotes_a_primary_and_refuses_an_older_epoch():
    p = primary(3)
    p.repoint("q:1", epoch=4)
    assert p.role is Role.REPLICA and p.primary == "q:1" and not p.writable
    with pytest.raises(ValueError):
        p.repoint("q:1", epoch=2)


def test_freshness_is_time_since_the_primary_was_heard():
    r = replica()
    r.do_heartbeat(1, 10, now=100.0)
    assert r.fresh(100.5, 1.0) and not r.fresh(102.0, 1.0)
    assert r.primary_last_lsn == 10
    assert primary().fresh(1e9, 0.0)


def test_failover_scenario_end_to_end():
    """Primary p and replicas a, b; p dies; a is promoted; b follows a; p comes back."""
    p, plog = primary(1), FakeLog()
    a, alog = replica(name="a"), FakeLog()
    b, blog = replica(name="b"), FakeLog()
    plog.append(1, 10)
    alog.append(1, 10)  # a got everything
    blog.append(1, 7)  # b is behind
    plog.append(1, 2)  # p wrote 2 more nobody received, then died
    assert a.promote() == 2
    b.repoint("a:1", epoch=2)
    assert subscribe(a, alog, b, blog) == Stream(8)
    alog.append(2, 3)  # new writes in epoch 2: lsn 11..13
    old = p
    old.repoint("a:1", epoch=2)
    # p's lsn 12 (epoch 1) is not a's lsn 12 (epoch 2): p must resync from a snapshot.
    assert isinstance(subscribe(a, alog, old, plog), NeedSnapshot)


# -- a seeded simulation: random writes, partial replication, crashes and promotions --

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class SimNode:
    """A node of the simulation: the pure ``Node`` plus a log of (epoch, write id)."""

    def __init__(self, name, role, epoch=1, primary=None):
        self.node = Node(name, name, role, epoch, primary)
        self.log: list[tuple[int, int]] = []

    def view(self):
        def epoch_of(lsn):
            return self.log[lsn - 1][0] if 1 <= lsn <= len(self.log) else None

        return LogView(0, 0, len(self.log), epoch_of)

    def position(self):
        return len(self.log), (self.log[-1][0] if self.log else 0)


OPS = st.lists(
    st.tuples(
        st.sampled_from(["write", "replicate", "fail_over", "rejoin"]),
        st.integers(0, 2),
        st.integers(1, 4),
    ),  # fmt: skip
    max_size=60,
)


@given(OPS)
@settings(max_examples=300, deadline=None)
def test_simulated_failovers_never_stream_onto_a_diverged_log(ops):
    """Safety of the subscription check: whenever the primary answers ``Stream(n)``, the
    subscriber's first n-1 records are exactly the primary's (same writes, not just the
    same count), however writes, partial replication and promotions interleave."""
    nodes = [SimNode("n0", Role.PRIMARY)] + [
        SimNode(f"n{i}", Role.REPLICA, primary="n0") for i in (1, 2)
    ]
    primary = nodes[0]
    max_epoch, next_write = 1, 0
    down: set[str] = set()
    for op, who, amount in ops:
        if op == "write":
            for _ in range(amount):
                next_write += 1
                primary.log.append((primary.node.epoch, next_write))
        elif op == "replicate":
            sub = nodes[who]
            if sub is primary or sub.node.name in down:
                continue
            decision = primary.node.do_subscribe(
                sub.node.name, sub.node.name, sub.node.epoch, *sub.position(), primary.view(), 0.0
            )
            if isinstance(decision, Stream):
                n = decision.from_lsn - 1
                assert sub.log[:n] == primary.log[:n], "streamed onto a diverged log"
                assert sub.node.do_records(primary.node.epoch, 0.0)
                sub.log = sub.log[:n] + primary.log[n : n + amount]
            elif isinstance(decision, NeedSnapshot):
                sub.log = list(primary.log)  # install the primary's state
            else:
                assert isinstance(decision, Refuse)
        elif op == "fail_over":
            # The primary dies; the controller promotes the most advanced live replica.
            down.add(primary.node.name)
            live = [n for n in nodes if n.node.name not in down]
            if not live:
                down.discard(primary.node.name)
                continue
            chosen = max(live, key=lambda n: len(n.log))
            max_epoch += 1
            chosen.node.promote(max_epoch)
            primary = chosen
            for other in live:
                if other is not chosen:
                    other.node.repoint(chosen.node.name, max_epoch)
        elif op == "rejoin":
            # A dead node comes back as a replica of the current primary.
            back = nodes[who]
            if back.node.name in down:
                down.discard(back.node.name)
                back.node.repoint(primary.node.name, max_epoch)
    # Every live replica converges when it finally subscribes.
    for sub in nodes:
        if sub is primary or sub.node.name in down:
            continue
        for _ in range(2):
            decision = primary.node.do_subscribe(
                sub.node.name, sub.node.name, sub.node.epoch, *sub.position(), primary.view(), 0.0
            )
            if isinstance(decision, NeedSnapshot):
                sub.log = list(primary.log)
            elif isinstance(decision, Stream):
                n = decision.from_lsn - 1
                assert sub.log[:n] == primary.log[:n]
                sub.log = list(primary.log)
        assert sub.log == primary.log


def test_peer_reports_make_an_old_primary_follow_the_newer_one():
    from components.store.replication import PeerReport

    old = primary(1)
    reports = [PeerReport("a:1", Role.PRIMARY, 2, True), PeerReport("b:1", Role.REPLICA, 2, False)]
    assert old.do_peer_reports(reports) == ("a:1", 2)
    assert primary(2).do_peer_reports(reports) is None  # same epoch: not ours to settle
    lost = Node("r", "r:1", Role.REPLICA, 2, primary=None)
    assert lost.do_peer_reports(reports) == ("a:1", 2)
    following = replica(epoch=1)
    assert following.do_peer_reports(reports) == ("a:1", 2)
    assert following.do_peer_reports([PeerReport("a:1", Role.PRIMARY, 3, False)]) is None


def test_the_end_of_an_old_stream_does_not_disconnect_the_new_one():
    p, plog = primary(), FakeLog([1] * 3)
    subscribe(p, plog, replica(), FakeLog())
    old_stream = p.followers["r"].stream
    subscribe(p, plog, replica(), FakeLog([1]))  # the replica reconnected
    p.do_disconnect("r", old_stream)  # the old connection's end is noticed late
    assert p.followers["r"].connected
    p.do_disconnect("r", p.followers["r"].stream)
    assert not p.followers["r"].connected


def test_the_number_of_tracked_replicas_is_bounded():
    from components.store.replication import MAX_FOLLOWERS

    p, plog = primary(), FakeLog([1])
    for i in range(MAX_FOLLOWERS):
        assert isinstance(subscribe(p, plog, replica(name=f"r{i}"), FakeLog()), Stream)
    assert isinstance(subscribe(p, plog, replica(name="one-too-many"), FakeLog()), Refuse)
    assert isinstance(subscribe(p, plog, replica(name="r0"), FakeLog()), Stream)  # known: fine
