"""The binlog's syncer: a helper process that runs group commits' ``fdatasync``.

Why a process and not the disk thread (diskthread.py): a thread shares the server's
GIL. Every group commit then costs a few GIL hand-offs (the thread wakes, takes the
GIL to start its call, drops it for the syscall, takes it again to post the result;
the loop is preempted or waits each time): measured at ~3 µs of a durable put's ~5.7 µs
binlog cost. A helper process has its own interpreter and GIL, so the only thing the
two share is a socket: the loop writes a group's records to the segment as before,
sends one small message, goes on parsing puts, and learns of the fsync from one
readable event. This is PostgreSQL's WAL writer idea in miniature, with the roles
split differently (here the server writes, the helper only syncs).

Protocol, over a ``SOCK_SEQPACKET`` socketpair (message boundaries kept, and file
descriptors travel with the message they are attached to):

- request, server to helper: 8 bytes, ``<Q`` the binlog sequence the sync covers (a
  token). When the binlog's segment changed (first sync, or a compaction swapped the
  file) the request carries the segment's fd (``SCM_RIGHTS``, ``socket.send_fds``);
  the helper closes its previous one. ``fdatasync`` acts on the file, not the fd, so
  the helper's duplicate makes durable whatever the server wrote before sending.
- reply, helper to server: 12 bytes, ``<Qi`` the same token and 0, or the ``errno``
  the ``fdatasync`` failed with.

One sync is in flight at a time (the server's group commit already works that way),
so replies come back in request order.

Failure semantics: an ``errno`` in a reply, the helper's death (the socket reads EOF
or fails) or a failed send all end the syncer: every waiting sync and every later
one reports an error, which the server treats as a failed disk (puts get
``INTERNAL_ERROR``, held replies are never sent). No put is acknowledged without a
completed ``fdatasync``, and nothing waits forever on a helper that is gone. The
helper dies with the server: ``die_with_parent`` (a parent-death ``SIGKILL``) covers
``kill -9``, and EOF on its socket covers an ordinary exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable

from topologies.process import child_env, die_with_parent

from .diskthread import Done

REQUEST = struct.Struct("<Q")
REPLY = struct.Struct("<Qi")
#: How long close() waits for the helper to exit after its socket closed.
EXIT_WAIT_SECONDS = 2.0


class SyncerLost(OSError):
    """The helper process is gone or its socket failed: nothing more can be synced."""


class Syncer:
    """The server's end: ``sync(fd, key, token, done)``, ``done`` runs on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_lost: Callable[[BaseException], None]) -> None:  # fmt: skip
        self._loop = loop
        self._on_lost = on_lost
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "components.queue.syncer", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                env=child_env(), preexec_fn=_helper_preexec,
            )  # fmt: skip
        finally:
            theirs.close()
        self._sock.setblocking(False)
        self._waiting: deque[tuple[int, Done]] = deque()
        self._sent_key: object = None
        self.error: BaseException | None = None
        self._closed = False
        loop.add_reader(self._sock.fileno(), self._on_readable)

    def sync(self, fd: int, key: object, token: int, done: Done) -> None:
        """Make ``fd``'s file durable up to now; ``done(None, error)`` on the loop.

        ``key`` names the segment (it changes when the file does): the fd is sent along
        only when it differs from the last one sent.
        """
        if self.error is not None:
            self._loop.call_soon(done, None, self.error)
            return
        message = REQUEST.pack(token)
        try:
            if key != self._sent_key:
                socket.send_fds(self._sock, [message], [fd])
                self._sent_key = key
            else:
                self._sock.send(message)
        except OSError as exc:
            error = SyncerLost(exc.errno, f"syncer send: {exc}")
            # done runs from the loop, not inside the caller's commit: no reentrancy.
            self._loop.call_soon(done, None, error)
            self._fail(error, notify=False)
            return
        self._waiting.append((token, done))

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(REPLY.size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(SyncerLost(exc.errno, f"syncer socket: {exc}"))
            return
        if len(data) != REPLY.size or not self._waiting:
            code = self.process.poll()
            self._fail(SyncerLost(errno.EPIPE, f"syncer exited (status {code})"))
            return
        token, code = REPLY.unpack(data)
        expected, done = self._waiting.popleft()
        if token != expected:  # cannot happen with one sync in flight; never guess
            done(None, SyncerLost(errno.EPROTO, f"syncer answered {token}, not {expected}"))
            self._fail(SyncerLost(errno.EPROTO, "syncer out of step"))
            return
        if code:
            error = OSError(code, f"fdatasync: {os.strerror(code)}")
            done(None, error)
            self._fail(error)
            return
        done(None, None)

    def _fail(self, error: BaseException, notify: bool = True) -> None:
        """End the syncer: waiting syncs fail with ``error``, later ones at once."""
        if self.error is not None or self._closed:
            return
        self.error = error
        self._loop.remove_reader(self._sock.fileno())
        waiting, self._waiting = self._waiting, deque()
        for _token, done in waiting:
            done(None, error)
        if notify and not waiting:  # nobody waiting would hear of it: tell the server now
            self._on_lost(error)
        self._stop_process()

    def close(self) -> None:
        """Stop the helper (syncs still in flight are dropped, their done never runs)."""
        if self._closed:
            return
        self._closed = True
        if self.error is None:
            self._loop.remove_reader(self._sock.fileno())
        self._stop_process()

    def _stop_process(self) -> None:
        # EOF tells the helper to exit; a kill covers a helper stuck in a slow fsync. The
        # waits are bounded: a process in an uninterruptible fsync dies only when it ends.
        if self._sock.fileno() >= 0:
            self._sock.close()
        try:
            self.process.wait(EXIT_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(EXIT_WAIT_SECONDS)


# -- the helper process ---------------------------------------------------------------


def serve(sock: socket.socket) -> None:
    """Answer sync requests until the server closes its end (blocking; the helper's loop)."""
    fd = -1
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, REQUEST.size, 1)
        except OSError:
            return
        if len(message) != REQUEST.size:  # EOF (the server closed or died) or garbage
            return
        if fds:
            if fd >= 0:
                os.close(fd)
            fd = fds[0]
        (token,) = REQUEST.unpack(message)
        try:
            os.fdatasync(fd)
            code = 0
        except OSError as exc:
            code = exc.errno or errno.EIO
        try:
            sock.send(REPLY.pack(token, code))
        except OSError:
            return


def _helper_preexec() -> None:
    """Between fork and exec: die with the server; ignore SIGINT and SIGTERM.

    Ctrl-C or a SIGTERM to the process group must not end the helper before the server:
    a draining server still has group commits to run. It ends on EOF (the server closed
    its end or exited) or with the server. Ignored signals stay ignored across exec, so
    there is no window while the interpreter starts.
    """
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
