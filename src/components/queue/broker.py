"""The queue itself: tubes, job states and timers, pure and driven by a clock you pass in.

A job lives in one tube and in one of four states (protocol.txt, "Job Lifecycle"):

    put ──> READY ──reserve──> RESERVED ──delete──> gone
      └──> DELAYED ─(time)─┘      │ ^  release(delay) ──> DELAYED or READY
                  ^               │ └──(TTR expires: back to READY)
                  kick            └─bury──> BURIED ──kick──> READY

Each tube keeps its READY jobs in a heap ordered by ``(priority, id)`` (most urgent
first, then first come), its DELAYED jobs in a heap ordered by deadline, and its BURIED
jobs in a FIFO. Heaps do not support removal from the middle, and ``delete <id>``,
``kick-job`` and ``reserve-job`` need it, so removal is *lazy*: each time a job enters a
heap it gets a fresh sequence number, a heap entry is live only while the job still
carries that number, and a heap is rebuilt when dead entries outnumber live ones, which
keeps every structure bounded by the number of live jobs.

A ``Session`` is one client connection's view: the tube it uses, its watch list, the
jobs it has reserved, and whether it is blocked in ``reserve``. Blocked sessions wait in
every tube they watch; whenever a job may have become reservable, ``_match`` hands the
most urgent ready job in any non-paused tube to the longest-waiting session watching it,
as beanstalkd's process_queue does. Results for sessions other than the caller (a job
for a blocked reserve, ``TIMED_OUT``, ``DEADLINE_SOON``) are appended to ``wakeups`` for
the server to deliver.

Time is a float of seconds passed into every call (``now``). The server passes wall-clock
time so that delays persisted in the binlog keep their deadline across a restart; tests
pass whatever they like. ``tick(now)`` moves time forward: delayed jobs become ready,
TTRs expire, paused tubes resume, blocked reserves time out; ``next_wakeup()`` says when
the next of those is due so the server needs exactly one timer.

The optional ``journal`` is told about every change that must survive a restart (put,
release, bury, kick, delete); reserve, touch and TTR expiry are not logged because a
reserved job comes back ready after a restart anyway.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Protocol

READY = "ready"
DELAYED = "delayed"
RESERVED = "reserved"
BURIED = "buried"

#: protocol.txt stats: "current-jobs-urgent" counts ready jobs with priority < 1024.
URGENT_PRIORITY = 1024
#: protocol.txt reserve: "the last second [of TTR] is kept by the server as a safety margin".
SAFETY_MARGIN_S = 1.0
#: A heap is rebuilt when its dead entries exceed its live ones plus this slack.
HEAP_SLACK = 64
DEFAULT_TUBE = "default"


class Journal(Protocol):
    def put(self, job: Job) -> None: ...
    def update(self, job: Job) -> None: ...
    def delete(self, job: Job) -> None: ...


class Job:
    __slots__ = (
        "id", "tube", "pri", "delay", "ttr", "body", "state", "created_at", "deadline_at",
        "reserver", "seq", "reserves", "timeouts", "releases", "buries", "kicks",
    )  # fmt: skip

    def __init__(self, job_id, tube, pri, delay, ttr, body, created_at) -> None:
        self.id: int = job_id
        self.tube: Tube = tube
        self.pri: int = pri
        self.delay: int = delay
        self.ttr: int = ttr
        self.body: bytes = body
        self.state = READY
        self.created_at: float = created_at
        self.deadline_at: float = 0.0  # delayed: when ready; reserved: when TTR expires
        self.reserver: Session | None = None
        self.seq = 0
        self.reserves = self.timeouts = self.releases = self.buries = self.kicks = 0

    def __repr__(self) -> str:
        return f"Job({self.id}, {self.tube.name!r}, {self.state}, pri={self.pri})"


class Tube:
    __slots__ = (
        "name", "name_bytes", "ready", "delayed", "buried", "waiting", "using", "watching",
        "ready_count", "delayed_count", "reserved_count", "urgent_count",
        "total_jobs", "cmd_delete", "cmd_pause", "pause_s", "unpause_at",
    )  # fmt: skip

    def __init__(self, name: str) -> None:
        self.name = name
        self.name_bytes = name.encode()  # as the binlog writes it, once per tube
        self.ready: list[tuple[int, int, int, Job]] = []  # (pri, id, seq, job)
        self.delayed: list[tuple[float, int, int, Job]] = []  # (deadline, id, seq, job)
        self.buried: dict[int, Job] = {}  # FIFO by insertion
        self.waiting: dict[Session, None] = {}  # blocked reserves, FIFO
        self.using = self.watching = 0
        self.ready_count = self.delayed_count = self.reserved_count = self.urgent_count = 0
        self.total_jobs = self.cmd_delete = self.cmd_pause = 0
        self.pause_s = 0
        self.unpause_at = 0.0

    def paused(self, now: float) -> bool:
        return self.pause_s > 0 and now < self.unpause_at

    def top_ready(self) -> Job | None:
        heap = self.ready
        while heap:
            _, _, seq, job = heap[0]
            if job.seq == seq and job.state is READY:
                return job
            heapq.heappop(heap)
        return None

    def top_delayed(self) -> Job | None:
        heap = self.delayed
        while heap:
            _, _, seq, job = heap[0]
            if job.seq == seq and job.state is DELAYED:
                return job
            heapq.heappop(heap)
        return None

    def job_count(self) -> int:
        return self.ready_count + self.delayed_count + self.reserved_count + len(self.buried)


class Session:
    """One client's state in the queue (a connection, in the server)."""

    __slots__ = ("use", "watch", "reserved", "waiting", "wait_deadline", "wait_seq",
                 "producer", "worker", "handle")  # fmt: skip

    def __init__(self, handle: object = None) -> None:
        self.use: Tube | None = None
        self.watch: dict[str, Tube] = {}
        self.reserved: dict[int, Job] = {}
        self.waiting = False
        self.wait_deadline: float | None = None
        self.wait_seq = 0
        self.producer = self.worker = False
        self.handle = handle  # the server's connection object


class Broker:
    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal
        self.tubes: dict[str, Tube] = {}
        self.jobs: dict[int, Job] = {}
        self.next_id = 1
        self._seq = 0
        self._delays: list[tuple[float, int, int, Job]] = []  # every tube's delayed jobs
        self._ttrs: list[tuple[float, int, int, Job]] = []  # every reserved job's deadline
        self._waiters: list[tuple[float, int, Session]] = []  # (wake time, wait_seq, s)
        self._waiting_tubes: dict[Tube, None] = {}  # tubes with blocked sessions
        self._paused: set[Tube] = set()
        self.wakeups: list[tuple[Session, str, Job | None]] = []
        #: Called as ``tube_listener(tube, exists)`` when a tube is created or dropped.
        self.tube_listener = None
        # Whole-server figures for "stats" (protocol.txt "stats" keys).
        self.reserved_count = 0
        self.delayed_count = 0
        self.job_timeouts = 0
        self.total_jobs = 0
        self.sessions = 0
        self.waiting_count = 0
        self._tube(DEFAULT_TUBE)

    # -- sessions, tubes, watch lists ----------------------------------------------------

    def connect(self, handle: object = None) -> Session:
        session = Session(handle)
        tube = self._tube(DEFAULT_TUBE)
        session.use = tube
        session.watch[DEFAULT_TUBE] = tube
        tube.using += 1
        tube.watching += 1
        self.sessions += 1
        return session

    def disconnect(self, session: Session, now: float) -> None:
        """A closed connection: its reserved jobs go back to ready at once (beanstalkd)."""
        self._unwait(session)
        for job in list(session.reserved.values()):
            self._unreserve(job)
            self._make_ready(job)
        self.sessions -= 1
        assert session.use is not None
        session.use.using -= 1
        self._maybe_drop(session.use)
        for tube in session.watch.values():
            tube.watching -= 1
            self._maybe_drop(tube)
        session.watch.clear()
        self._match(now)

    def use(self, session: Session, name: str) -> Tube:
        tube = self._tube(name)
        old = session.use
        assert old is not None
        tube.using += 1
        old.using -= 1
        session.use = tube
        self._maybe_drop(old)
        return tube

    def watch(self, session: Session, name: str) -> int:
        if name not in session.watch:
            tube = self._tube(name)
            session.watch[name] = tube
            tube.watching += 1
        return len(session.watch)

    def ignore(self, session: Session, name: str) -> int | None:
        """The new watch-list size, or None (NOT_IGNORED) for the last watched tube."""
        tube = session.watch.get(name)
        if tube is None:
            return len(session.watch)
        if len(session.watch) < 2:
            return None
        del session.watch[name]
        tube.watching -= 1
        self._maybe_drop(tube)
        return len(session.watch)

    def _tube(self, name: str) -> Tube:
        tube = self.tubes.get(name)
        if tube is None:
            tube = self.tubes[name] = Tube(name)
            if self.tube_listener is not None:
                self.tube_listener(tube, True)
        return tube

    def _maybe_drop(self, tube: Tube) -> None:
        """protocol.txt: a tube with no jobs that no client refers to is deleted."""
        if (
            tube.name != DEFAULT_TUBE
            and not tube.using
            and not tube.watching
            and not tube.waiting
            and not tube.job_count()
        ):
            self.tubes.pop(tube.name, None)
            self._paused.discard(tube)
            if self.tube_listener is not None:
                self.tube_listener(tube, False)

    # -- producing -------------------------------------------------------------------------

    def put(self, session: Session | None, tube: Tube, pri: int, delay: int, ttr: int,
            body: bytes, now: float) -> Job:  # fmt: skip
        """A new job; ``ttr`` 0 becomes 1 as protocol.txt requires."""
        job_id = self.next_id
        self.next_id = job_id + 1
        job = Job(job_id, tube, pri, delay, ttr if ttr > 0 else 1, body, now)
        self.jobs[job_id] = job
        tube.total_jobs += 1
        self.total_jobs += 1
        if session is not None:
            session.producer = True
        if delay > 0:
            self._make_delayed(job, now + delay)
        else:  # _make_ready, inlined: the put path runs it for nearly every job
            self._seq = seq = self._seq + 1
            job.seq = seq  # Job() starts READY
            heapq.heappush(tube.ready, (pri, job_id, seq, job))
            tube.ready_count += 1
            if pri < URGENT_PRIORITY:
                tube.urgent_count += 1
        if self.journal is not None:
            self.journal.put(job)
        if self._waiting_tubes:  # a blocked reserve may take it at once
            self._match(now)
        return job

    def restore(self, job_id: int, tube_name: str, pri: int, delay: int, ttr: int,
                body: bytes, state: str, deadline_at: float, created_at: float) -> Job:  # fmt: skip
        """A job read back from the binlog, in the state it was logged in."""
        tube = self._tube(tube_name)
        job = Job(job_id, tube, pri, delay, max(ttr, 1), body, created_at)
        self.jobs[job_id] = job
        self.next_id = max(self.next_id, job_id + 1)
        tube.total_jobs += 1
        self.total_jobs += 1
        if state == BURIED:
            self._make_buried(job)
        elif state == DELAYED:
            self._make_delayed(job, deadline_at)
        else:  # ready, and reserved ones come back ready
            self._make_ready(job)
        return job

    # -- consuming -------------------------------------------------------------------------

    def reserve(self, session: Session, now: float, timeout: float | None = None):
        """Reserve for ``session``: ``("reserved", job)``, ``("deadline_soon", None)``,
        ``("timed_out", None)``, or ``None`` when it now waits (see ``wakeups``)."""
        session.worker = True
        job = self._best_ready(session.watch.values(), now)
        if job is None and self._deadline_soon(session, now):
            return ("deadline_soon", None)
        if job is not None:
            self._take_ready(job)
            self._reserve(session, job, now)
            return ("reserved", job)
        if timeout is not None and timeout <= 0:
            return ("timed_out", None)
        self._wait(session, now, None if timeout is None else now + timeout)
        return None

    def cancel_wait(self, session: Session) -> bool:
        """Stop a blocked reserve (the client half-closed); True if it was waiting."""
        was = session.waiting
        self._unwait(session)
        return was

    def reserve_job(self, session: Session, job_id: int, now: float) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.state is RESERVED:
            return None
        self._leave_state(job)
        session.worker = True
        self._reserve(session, job, now)
        return job

    def delete(self, session: Session, job_id: int, now: float) -> bool:
        """Delete a job that is ready, delayed, buried, or reserved by this session."""
        job = self.jobs.get(job_id)
        if job is None or (job.state is RESERVED and job.reserver is not session):
            return False
        self._leave_state(job)
        del self.jobs[job_id]
        job.tube.cmd_delete += 1
        if self.journal is not None:
            self.journal.delete(job)
        self._maybe_drop(job.tube)
        return True

    def release(self, session: Session, job_id: int, pri: int, delay: int, now: float) -> bool:
        job = session.reserved.get(job_id)
        if job is None:
            return False
        self._unreserve(job)
        job.pri = pri
        job.delay = delay
        job.releases += 1
        if delay > 0:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job)
        if self.journal is not None:
            self.journal.update(job)
        self._match(now)
        return True

    def bury(self, session: Session, job_id: int, pri: int, now: float) -> bool:
        job = session.reserved.get(job_id)
        if job is None:
            return False
        self._unreserve(job)
        job.pri = pri
        job.buries += 1
        self._make_buried(job)
        if self.journal is not None:
            self.journal.update(job)
        return True

    def touch(self, session: Session, job_id: int, now: float) -> bool:
        """Restart the TTR clock of a job this session has reserved."""
        job = session.reserved.get(job_id)
        if job is None:
            return False
        self._set_ttr(job, now + job.ttr)
        return True

    def kick(self, tube: Tube, bound: int, now: float) -> int:
        """Kick up to ``bound`` buried jobs, or if there are none, delayed ones."""
        count = 0
        if tube.buried:
            while count < bound and tube.buried:
                self._kick(next(iter(tube.buried.values())))
                count += 1
        else:
            while count < bound:
                job = tube.top_delayed()
                if job is None:
                    break
                self._kick(job)
                count += 1
        if count:
            self._match(now)
        return count

    def kick_job(self, job_id: int, now: float) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state not in (BURIED, DELAYED):
            return False
        self._kick(job)
        self._match(now)
        return True

    def _kick(self, job: Job) -> None:
        self._leave_state(job)
        job.kicks += 1
        self._make_ready(job)
        if self.journal is not None:
            self.journal.update(job)

    def pause_tube(self, name: str, delay: int, now: float) -> bool:
        tube = self.tubes.get(name)
        if tube is None:
            return False
        # beanstalkd always pauses for a positive time, so waiters do wake up again.
        delay = max(delay, 1)
        tube.pause_s = delay
        tube.unpause_at = now + delay
        tube.cmd_pause += 1
        self._paused.add(tube)
        return True

    # -- peeking ---------------------------------------------------------------------------

    def peek(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def peek_ready(self, tube: Tube) -> Job | None:
        return tube.top_ready()

    def peek_delayed(self, tube: Tube) -> Job | None:
        return tube.top_delayed()

    def peek_buried(self, tube: Tube) -> Job | None:
        return next(iter(tube.buried.values()), None)

    # -- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Apply everything due by ``now``; results for blocked sessions go to wakeups."""
        delays = self._delays
        while delays and delays[0][0] <= now:
            _, _, seq, job = heapq.heappop(delays)
            if job.seq == seq and job.state is DELAYED:
                self._leave_state(job)
                self._make_ready(job)
        ttrs = self._ttrs
        while ttrs and ttrs[0][0] <= now:
            _, _, seq, job = heapq.heappop(ttrs)
            if job.seq == seq and job.state is RESERVED:
                job.timeouts += 1
                self.job_timeouts += 1
                self._unreserve(job)
                self._make_ready(job)
        for tube in [t for t in self._paused if not t.paused(now)]:
            tube.pause_s = 0
            self._paused.discard(tube)
            self._maybe_drop(tube)
        self._match(now)
        waiters = self._waiters
        while waiters and waiters[0][0] <= now:
            _, seq, session = heapq.heappop(waiters)
            if not session.waiting or session.wait_seq != seq:
                continue
            if self._deadline_soon(session, now):
                self._unwait(session)
                self.wakeups.append((session, "deadline_soon", None))
            elif session.wait_deadline is not None and session.wait_deadline <= now:
                self._unwait(session)
                self.wakeups.append((session, "timed_out", None))
            else:
                self._schedule_waiter(session, now)

    def next_wakeup(self) -> float | None:
        """The earliest time ``tick`` has something to do, or None."""
        times = []
        for heap in (self._delays, self._ttrs):
            while heap and (heap[0][3].seq != heap[0][2]):
                heapq.heappop(heap)
            if heap:
                times.append(heap[0][0])
        waiters = self._waiters
        while waiters and (not waiters[0][2].waiting or waiters[0][2].wait_seq != waiters[0][1]):
            heapq.heappop(waiters)
        if waiters:
            times.append(waiters[0][0])
        times.extend(t.unpause_at for t in self._paused)
        return min(times) if times else None

    def take_wakeups(self) -> list[tuple[Session, str, Job | None]]:
        wakeups, self.wakeups = self.wakeups, []
        return wakeups

    # -- stats -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        ready = delayed = buried = urgent = 0
        for tube in self.tubes.values():
            ready += tube.ready_count
            delayed += tube.delayed_count
            buried += len(tube.buried)
            urgent += tube.urgent_count
        return {"urgent": urgent, "ready": ready, "reserved": self.reserved_count,
                "delayed": delayed, "buried": buried}  # fmt: skip

    def job_stats(self, job: Job, now: float, file_index: int = 0) -> list[tuple[str, object]]:
        time_left = 0
        if job.state is RESERVED or job.state is DELAYED:
            time_left = max(0, int(job.deadline_at - now))
        return [
            ("id", job.id),
            ("tube", job.tube.name),  # unquoted, as beanstalkd 1.12 writes it
            ("state", job.state),
            ("pri", job.pri),
            ("age", max(0, int(now - job.created_at))),
            ("delay", job.delay),
            ("ttr", job.ttr),
            ("time-left", time_left),
            ("file", file_index),
            ("reserves", job.reserves),
            ("timeouts", job.timeouts),
            ("releases", job.releases),
            ("buries", job.buries),
            ("kicks", job.kicks),
        ]

    def tube_stats(self, tube: Tube, now: float) -> list[tuple[str, object]]:
        paused = tube.paused(now)
        return [
            ("name", tube.name),
            ("current-jobs-urgent", tube.urgent_count),
            ("current-jobs-ready", tube.ready_count),
            ("current-jobs-reserved", tube.reserved_count),
            ("current-jobs-delayed", tube.delayed_count),
            ("current-jobs-buried", len(tube.buried)),
            ("total-jobs", tube.total_jobs),
            ("current-using", tube.using),
            ("current-watching", tube.watching),
            ("current-waiting", len(tube.waiting)),
            ("cmd-delete", tube.cmd_delete),
            ("cmd-pause-tube", tube.cmd_pause),
            ("pause", tube.pause_s if paused else 0),
            ("pause-time-left", max(0, int(tube.unpause_at - now)) if paused else 0),
        ]

    def iter_jobs(self) -> Iterator[Job]:
        return iter(self.jobs.values())

    # -- state transitions (the only places that touch the structures) -------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = READY
        job.seq = seq = self._next_seq()
        heapq.heappush(tube.ready, (job.pri, job.id, seq, job))
        tube.ready_count += 1
        if job.pri < URGENT_PRIORITY:
            tube.urgent_count += 1

    def _make_delayed(self, job: Job, deadline: float) -> None:
        tube = job.tube
        job.state = DELAYED
        job.deadline_at = deadline
        job.seq = seq = self._next_seq()
        entry = (deadline, job.id, seq, job)
        heapq.heappush(tube.delayed, entry)
        heapq.heappush(self._delays, entry)
        tube.delayed_count += 1
        self.delayed_count += 1

    def _make_buried(self, job: Job) -> None:
        job.state = BURIED
        job.seq = self._next_seq()
        job.tube.buried[job.id] = job

    def _leave_state(self, job: Job) -> None:
        """Take a job out of whatever state it is in (heap entries die lazily)."""
        tube = job.tube
        state = job.state
        job.seq = 0
        if state is READY:
            tube.ready_count -= 1
            if job.pri < URGENT_PRIORITY:
                tube.urgent_count -= 1
            _compact(tube.ready, tube.ready_count)
        elif state is DELAYED:
            tube.delayed_count -= 1
            _compact(tube.delayed, tube.delayed_count)
            self.delayed_count -= 1
            _compact(self._delays, self.delayed_count)
        elif state is BURIED:
            del tube.buried[job.id]
        elif state is RESERVED:
            self._unreserve(job)
        job.state = None  # type: ignore[assignment]

    def _take_ready(self, job: Job) -> None:
        self._leave_state(job)

    def _reserve(self, session: Session, job: Job, now: float) -> None:
        job.state = RESERVED
        job.reserver = session
        job.reserves += 1
        session.reserved[job.id] = job
        job.tube.reserved_count += 1
        self.reserved_count += 1
        self._set_ttr(job, now + job.ttr)

    def _set_ttr(self, job: Job, deadline: float) -> None:
        job.deadline_at = deadline
        job.seq = seq = self._next_seq()
        heapq.heappush(self._ttrs, (deadline, job.id, seq, job))
        if len(self._ttrs) > 2 * self.reserved_count + HEAP_SLACK:
            self._ttrs = [e for e in self._ttrs if e[3].seq == e[2] and e[3].state is RESERVED]
            heapq.heapify(self._ttrs)

    def _unreserve(self, job: Job) -> None:
        session = job.reserver
        if session is not None:
            session.reserved.pop(job.id, None)
        job.reserver = None
        job.state = None  # type: ignore[assignment]
        job.seq = 0
        job.tube.reserved_count -= 1
        self.reserved_count -= 1

    def _deadline_soon(self, session: Session, now: float) -> bool:
        return any(j.deadline_at - now <= SAFETY_MARGIN_S for j in session.reserved.values())

    def _best_ready(self, tubes, now: float) -> Job | None:
        best = None
        for tube in tubes:
            if tube.ready_count == 0 or (tube.pause_s and tube.paused(now)):
                continue
            job = tube.top_ready()
            if job is not None and (best is None or (job.pri, job.id) < (best.pri, best.id)):
                best = job
        return best

    def _wait(self, session: Session, now: float, deadline: float | None) -> None:
        session.waiting = True
        session.wait_deadline = deadline
        self.waiting_count += 1
        for tube in session.watch.values():
            tube.waiting[session] = None
            self._waiting_tubes[tube] = None
        self._schedule_waiter(session, now)

    def _schedule_waiter(self, session: Session, now: float) -> None:
        times = [j.deadline_at - SAFETY_MARGIN_S for j in session.reserved.values()]
        if session.wait_deadline is not None:
            times.append(session.wait_deadline)
        session.wait_seq = seq = self._next_seq()
        if times:
            heapq.heappush(self._waiters, (max(min(times), now), seq, session))
            if len(self._waiters) > 2 * self.waiting_count + HEAP_SLACK:
                self._waiters = [e for e in self._waiters if e[2].waiting and e[2].wait_seq == e[1]]
                heapq.heapify(self._waiters)

    def _unwait(self, session: Session) -> None:
        if not session.waiting:
            return
        session.waiting = False
        session.wait_seq = 0
        self.waiting_count -= 1
        for tube in session.watch.values():
            tube.waiting.pop(session, None)
            if not tube.waiting:
                self._waiting_tubes.pop(tube, None)

    def _match(self, now: float) -> None:
        """Give ready jobs to blocked sessions: most urgent job, longest waiter first."""
        while self._waiting_tubes:
            job = self._best_ready(list(self._waiting_tubes), now)
            if job is None:
                return
            session = next(iter(job.tube.waiting))
            self._unwait(session)
            self._take_ready(job)
            self._reserve(session, job, now)
            self.wakeups.append((session, "reserved", job))


def _compact(heap: list, live: int) -> None:
    """Rebuild a lazily-deleted heap once dead entries dominate (bounds memory)."""
    if len(heap) > 2 * live + HEAP_SLACK:
        heap[:] = [e for e in heap if e[3].seq == e[2]]
        heapq.heapify(heap)
