"""Primary/replica replication as a pure state machine: messages and a clock in, decisions out.

This is the chapter's "master/slave replication" with the mechanics a reader can follow:

- **One primary, any number of replicas.** Only the primary accepts writes; it numbers
  them (LSN) in its redo log. A replica *subscribes* with the position it holds
  ``(last_lsn, last_epoch)`` and receives the primary's log records from there, applies
  them in order and *acks* the LSN it has made durable. The primary's view of each
  replica (acked LSN, last contact) gives replication lag and semi-synchronous commit
  ("K replicas have it").
- **Epochs fence.** Every promotion raises the epoch (a term, as in Raft; a leader epoch,
  as in Kafka). Records carry the epoch that wrote them. A node refuses records and
  subscriptions from a lower epoch, and a primary that meets a higher epoch knows it has
  been deposed and stops taking writes.
- **Divergence is found, not guessed.** If a subscriber's ``(last_lsn, last_epoch)`` is
  not a record of the primary's log, the subscriber holds writes the new primary never
  had (an old primary coming back): its state cannot be trusted, so it must install a
  snapshot and stream from there (``NeedSnapshot``). The same answer goes to a replica
  whose position is older than the primary's log (compacted away).

What this refuses: electing anybody. There is no consensus here; promotion is an
operator's (or the failover controller's) decision, made with ``promote``; the epoch makes
a wrong or late decision safe to detect. With asynchronous replication a promotion may
lose the writes the new primary had not received (at most its lag); ``--sync-replicas K``
closes that window for writes acknowledged after K replicas hold them.

Everything here is pure: no sockets, no files, time passed in as ``now`` (seconds). The
tests drive several ``Node`` objects through a fake network, as 500 Lines' *cluster* does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

#: Replicas one primary tracks at most; more subscribers are refused (bounded state).
MAX_FOLLOWERS = 64


class Role(StrEnum):
    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(slots=True)
class Follower:
    """The primary's view of one replica."""

    name: str
    api_addr: str
    acked_lsn: int = 0
    last_seen: float = 0.0
    connected: bool = False
    #: numbers the replica's subscriptions, so the end of an old stream that is noticed
    #: after the replica reconnected does not mark the new one disconnected
    stream: int = 0


# -- answers to a subscription ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stream:
    """Accepted: send records from ``from_lsn`` on."""

    from_lsn: int


@dataclass(frozen=True, slots=True)
class NeedSnapshot:
    """The subscriber must install a snapshot first (diverged, or too far behind)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Not now: this node is not a primary the subscriber may follow."""

    reason: str
    epoch: int
    primary: str | None = None


Decision = Stream | NeedSnapshot | Refuse


@dataclass(frozen=True, slots=True)
class PeerReport:
    """What a peer's ``/status`` says about itself (``--peers``)."""

    api_addr: str
    role: Role
    epoch: int
    writable: bool


@dataclass(frozen=True, slots=True)
class LogView:
    """What the subscription check needs to know of the primary's log.

    ``base`` is the position just before the first record (``(0, 0)`` for a log that
    starts at LSN 1; a snapshot's position after one was installed); ``epoch_of(lsn)``
    returns the epoch of a record in the log, or None.
    """

    base_lsn: int
    base_epoch: int
    last_lsn: int
    epoch_of: Callable[[int], int | None]


@dataclass(slots=True)
class Node:
    """One node's replication state. ``do_*`` methods handle messages."""

    name: str
    api_addr: str
    role: Role
    epoch: int
    primary: str | None = None  # the primary's API address, when a replica
    followers: dict[str, Follower] = field(default_factory=dict)
    #: a primary that saw a higher epoch stops taking writes until repointed
    fenced_by: int | None = None
    last_contact: float = 0.0  # replica: last message from the primary
    primary_last_lsn: int = 0  # replica: the primary's last LSN, from heartbeats

    # -- roles --------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return self.role is Role.PRIMARY and self.fenced_by is None

    def promote(self, epoch: int | None = None) -> int:
        """Become primary with a higher epoch (``epoch`` if given and higher)."""
        new_epoch = self.epoch + 1 if epoch is None else epoch
        if new_epoch <= self.epoch:
            raise ValueError(f"promotion needs an epoch above {self.epoch}, got {new_epoch}")
        self.role, self.epoch, self.primary = Role.PRIMARY, new_epoch, None
        self.fenced_by = None
        self.followers.clear()
        return new_epoch

    def repoint(self, primary: str, epoch: int | None = None) -> None:
        """Become (or stay) a replica of ``primary``; a primary steps down."""
        if epoch is not None and epoch < self.epoch:
            raise ValueError(f"cannot follow epoch {epoch}: this node is at {self.epoch}")
        self.role, self.primary = Role.REPLICA, primary
        if epoch is not None:
            self.epoch = epoch
        self.fenced_by = None
        self.followers.clear()

    def do_peer_reports(self, reports: list[PeerReport]) -> tuple[str, int] | None:
        """Should this node follow a primary its peers know of? ``(api, epoch)`` or None.

        A primary (deposed or not) follows a writable primary of a *higher* epoch: that
        is how an old primary that comes back learns it was replaced. A replica follows
        the highest-epoch writable primary when it is newer than what it follows, or when
        it follows nobody. Equal epochs are left alone: two primaries of one epoch are a
        controller's mistake that no local rule can settle.
        """
        candidates = [r for r in reports
                      if r.role is Role.PRIMARY and r.writable and r.api_addr != self.api_addr]  # fmt: skip
        if not candidates:
            return None
        best = max(candidates, key=lambda r: r.epoch)
        if best.epoch > self.epoch:
            return best.api_addr, best.epoch
        if self.role is Role.REPLICA and self.primary is None and best.epoch == self.epoch:
            return best.api_addr, best.epoch
        return None

    # -- primary side -------------------------------------------------------------------

    def do_subscribe(
        self, name: str, api_addr: str, epoch: int, last_lsn: int, last_epoch: int,
        log: LogView, now: float,
    ) -> Decision:  # fmt: skip
        """A replica asks to stream from its position."""
        if epoch > self.epoch:
            if self.role is Role.PRIMARY:
                self.fenced_by = epoch  # someone was promoted past us: we are deposed
            return Refuse(f"subscriber is at epoch {epoch}, this node at {self.epoch}", self.epoch)
        if self.role is not Role.PRIMARY:
            return Refuse("not the primary", self.epoch, self.primary)
        if self.fenced_by is not None:
            return Refuse(f"deposed by epoch {self.fenced_by}", self.epoch)
        if name not in self.followers and len(self.followers) >= MAX_FOLLOWERS:
            return Refuse(f"already tracking {MAX_FOLLOWERS} replicas", self.epoch)
        decision = self._match(last_lsn, last_epoch, log)
        if isinstance(decision, Stream):
            follower = self.followers.get(name)
            if follower is None:
                follower = self.followers[name] = Follower(name, api_addr)
            follower.api_addr = api_addr
            follower.acked_lsn = last_lsn
            follower.last_seen = now
            follower.connected = True
            follower.stream += 1
        return decision

    @staticmethod
    def _match(last_lsn: int, last_epoch: int, log: LogView) -> Decision:
        if last_lsn > log.last_lsn:
            return NeedSnapshot(f"subscriber is ahead ({last_lsn} > {log.last_lsn}): diverged")
        if last_lsn < log.base_lsn:
            return NeedSnapshot(f"log starts after {log.base_lsn}; subscriber is at {last_lsn}")
        if last_lsn == log.base_lsn:
            if last_lsn == 0 or last_epoch == log.base_epoch:
                return Stream(last_lsn + 1)
            return NeedSnapshot(f"epoch {last_epoch} at lsn {last_lsn} is not ours: diverged")
        ours = log.epoch_of(last_lsn)
        if ours != last_epoch:
            return NeedSnapshot(f"lsn {last_lsn} has epoch {ours} here, {last_epoch} there")
        return Stream(last_lsn + 1)

    def do_ack(self, name: str, epoch: int, lsn: int, now: float) -> bool:
        """A replica says it holds everything up to ``lsn`` durably."""
        if epoch > self.epoch and self.role is Role.PRIMARY:
            self.fenced_by = epoch
            return False
        follower = self.followers.get(name)
        if follower is None or epoch < self.epoch:
            return False
        follower.acked_lsn = max(follower.acked_lsn, lsn)
        follower.last_seen = now
        return True

    def do_disconnect(self, name: str, stream: int | None = None) -> None:
        """A replica's stream ended (``stream``: which subscription; None: any)."""
        follower = self.followers.get(name)
        if follower is not None and (stream is None or stream == follower.stream):
            follower.connected = False

    def acked_by(self, lsn: int) -> int:
        """How many connected replicas hold ``lsn`` durably (semi-sync's count)."""
        return sum(1 for f in self.followers.values() if f.connected and f.acked_lsn >= lsn)

    def lag(self, last_lsn: int) -> dict[str, int]:
        """Records each replica is behind."""
        return {n: max(0, last_lsn - f.acked_lsn) for n, f in self.followers.items()}

    # -- replica side -------------------------------------------------------------------

    def do_records(self, epoch: int, now: float) -> bool:
        """Records on a stream from a primary at ``epoch`` (the stream's epoch, not the
        records': old records keep the epoch that wrote them): accept or refuse."""
        if self.role is not Role.REPLICA or epoch < self.epoch:
            return False
        self.epoch = epoch
        self.last_contact = now
        return True

    def do_heartbeat(self, epoch: int, last_lsn: int, now: float) -> bool:
        if self.role is not Role.REPLICA or epoch < self.epoch:
            return False
        self.epoch = epoch
        self.last_contact = now
        self.primary_last_lsn = max(self.primary_last_lsn, last_lsn)
        return True

    def fresh(self, now: float, freshness_s: float) -> bool:
        """rqlite's ``freshness``: has the primary been heard from recently enough?"""
        if self.role is Role.PRIMARY:
            return True
        return now - self.last_contact <= freshness_s
