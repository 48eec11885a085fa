"""One component as its own OS process: start it, wait for its ready line, stop it.

Both the launcher and the tests start servers this way, so ``kill -9`` of one box in a
topology is a real process death, exactly as in production. The component contract
(DESIGN.md) makes this simple: a component prints one JSON ready line on stdout once it
listens, logs JSON lines on stderr, and on SIGTERM drains and exits 0.

Orphans: every child asks the kernel to SIGKILL it if its parent dies
(``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the launcher leaves no server behind;
children also run in their own session, so a Ctrl-C in the terminal reaches only the
launcher, which then stops them in order.

Stdout after the ready line: the contract says nothing more comes, but a component that
prints anyway (a debug print, a library that writes to stdout) would fill the pipe's
64 KiB and then block in ``write``, a hang that looks like a dead server. So once the
ready line is read, a small thread reads the rest of the pipe until EOF and throws it
away (counting the bytes: ``stdout_discarded_bytes``). It ends by itself when the
process exits; ``stop()`` and ``kill()`` wait for it, so no thread outlives its process.

``Pool``: interchangeable copies of one component, one more or one fewer at a time, the
way the queued stage's autoscaler runs its workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import orjson

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
#: How long stop()/kill() wait for the stdout drain to see EOF once the process is gone;
#: longer only if a grandchild inherited the pipe and still holds it open.
DRAIN_JOIN_TIMEOUT_S = 2.0
READ_CHUNK_BYTES = 65536
#: A ready line is a few hundred bytes; this much stdout without a newline is not one.
MAX_READY_LINE_BYTES = 65536
_PR_SET_PDEATHSIG = 1
_SRC_DIR = Path(__file__).resolve().parents[1]


class StartError(RuntimeError):
    """A component died or stayed silent before its ready line."""


try:  # looked up once in the parent: the child between fork and exec should only call it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: no parent-death signal, stop() still works
    _prctl = None


def die_with_parent(death_signal: int = signal.SIGKILL) -> None:
    """`preexec_fn` for a child that must not outlive us (runs between fork and exec).

    The child gets ``death_signal`` when we die. SIGKILL suits a single process; a server
    with a master and workers needs a signal its master handles (nginx: SIGTERM), or its
    workers outlive it (use ``functools.partial(die_with_parent, signal.SIGTERM)``)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: this source tree first on the path, unbuffered output."""
    env = dict(os.environ)
    env.update(extra or {})
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(_SRC_DIR) + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def tail(path: Path | None, lines: int = 20) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("r", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))


@dataclass
class ComponentProcess:
    """A running component: its process, its ready line, where its log goes."""

    component: str
    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    ready: dict = field(default_factory=dict)
    #: Bytes printed on stdout after the ready line, read and discarded (see the essay).
    stdout_discarded_bytes: int = 0
    _drain: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def listen(self) -> dict[str, str]:
        return self.ready.get("listen", {})

    def address(self, role: str = "main") -> tuple[str, int]:
        host, _, port = self.listen[role].rpartition(":")
        return host.strip("[]"), int(port)

    def url(self, role: str = "main", scheme: str = "http") -> str:
        return f"{scheme}://{self.listen[role]}"

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL if it has not drained and exited within ``timeout_s``."""
        self.signal(signal.SIGTERM)
        # A paused (SIGSTOPped) process keeps SIGTERM pending until it runs again: wake it
        # so it can drain. Harmless for a process that is already running.
        self.signal(signal.SIGCONT)
        try:
            code = self.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait()
        self._close_pipes()
        return code

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        code = self.popen.wait()
        self._close_pipes()
        return code

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)

    def start_drain(self, already_read: int = 0) -> None:
        """Read and discard stdout from now on, in a thread that ends at EOF."""
        self.stdout_discarded_bytes = already_read
        self._drain = threading.Thread(target=self._discard_stdout, daemon=True,
                                       name=f"stdout-drain-{self.name}")  # fmt: skip
        self._drain.start()

    def _discard_stdout(self) -> None:
        stdout = self.popen.stdout
        assert stdout is not None
        try:
            while chunk := os.read(stdout.fileno(), READ_CHUNK_BYTES):
                self.stdout_discarded_bytes += len(chunk)
        except (OSError, ValueError):  # closed under us: nothing more to read
            pass
        finally:
            stdout.close()  # the drain owns the pipe once it runs: only it closes it

    def _close_pipes(self) -> None:
        if self._drain is not None:
            # The process is gone, so EOF is on its way; closing the fd under a blocked
            # read instead would race with the fd number being reused.
            self._drain.join(DRAIN_JOIN_TIMEOUT_S)
        elif self.popen.stdout is not None:
            self.popen.stdout.close()


def start(
    component: str,
    *flags: str,
    name: str | None = None,
    log_path: Path | str | None = None,
    env: dict[str, str] | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
    module: str | None = None,
) -> ComponentProcess:
    """Start ``python -m components.<component> FLAGS`` and wait for its ready line.

    Unless given, ``--port 0 --admin-port 0`` and ``--name`` are added. Raises
    ``StartError`` with the last log lines when the process exits or stays silent.
    """
    name = name or component
    argv = [sys.executable, "-m", module or f"components.{component}", *flags]
    if "--port" not in flags:
        argv += ["--port", "0"]
    if "--admin-port" not in flags:
        argv += ["--admin-port", "0"]
    if "--name" not in flags:
        argv += ["--name", name]
    if log_path is None:
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=f"scalelab-{name}-", suffix=".log")
        os.close(fd)
        log_path = tmp
    return launch(argv, component=component, name=name, log_path=log_path, env=env,
                  ready_timeout_s=ready_timeout_s)  # fmt: skip


def launch(
    argv: list[str],
    *,
    log_path: Path | str,
    component: str = "",
    name: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    ready_timeout_s: float = READY_TIMEOUT_S,
) -> ComponentProcess:
    """Run any command that keeps the ready-line contract and wait for that line.

    ``start`` builds the argv of a component; benchmarks call this directly to put
    ``taskset -c 0`` in front, or to run a baseline server of their own.
    """
    log_path = Path(log_path)
    name = name or log_path.stem
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            env=child_env(env),
            cwd=cwd,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
    proc = ComponentProcess(component, name, argv, log_path, popen)
    try:
        proc.ready, extra = _wait_ready(proc, ready_timeout_s)
    except BaseException:
        proc.kill()
        raise
    proc.start_drain(already_read=extra)
    return proc


def _wait_ready(proc: ComponentProcess, timeout_s: float) -> tuple[dict, int]:
    """The ready line, and how many bytes after it were read with it (discarded)."""
    deadline = time.monotonic() + timeout_s
    stdout = proc.popen.stdout
    assert stdout is not None
    buffered = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise StartError(
                f"{proc.name}: no ready line within {timeout_s:.0f}s; last log lines:\n"
                + proc.log_tail()
            )
        readable, _, _ = select.select([stdout], [], [], min(remaining, 0.2))
        if readable:
            chunk = os.read(stdout.fileno(), READ_CHUNK_BYTES)
            if not chunk:
                code = proc.popen.wait()
                raise StartError(
                    f"{proc.name}: exited with code {code} before it was ready; "
                    f"last log lines:\n{proc.log_tail()}"
                )
            buffered += chunk
            line, newline, rest = buffered.partition(b"\n")
            if newline:
                try:
                    ready = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise StartError(f"{proc.name}: not a ready line: {line[:200]!r}") from None
                if not isinstance(ready, dict) or ready.get("event") != "ready":
                    raise StartError(f"{proc.name}: expected a ready line, got {ready}")
                return ready, len(rest)
            if len(buffered) > MAX_READY_LINE_BYTES:
                raise StartError(f"{proc.name}: no newline in the first "
                                 f"{MAX_READY_LINE_BYTES} bytes of stdout: {buffered[:200]!r}")  # fmt: skip
        elif proc.popen.poll() is not None:
            raise StartError(
                f"{proc.name}: exited with code {proc.popen.returncode} before it was ready; "
                f"last log lines:\n{proc.log_tail()}"
            )


class Pool:
    """Interchangeable copies of one component, one more or one fewer at a time.

    What an autoscaler needs from process supervision, and no more. ``grow()`` starts
    one more copy with ``start`` (its name ``<prefix>-<n>``: ``n`` is never reused, so
    each log file, ``log_dir/<name>.log``, tells one process's story); ``shrink()`` stops
    the newest with ``ComponentProcess.stop`` (SIGTERM: it drains, so a worker finishes
    or releases the job it holds; SIGKILL after ``stop_timeout_s``); ``reap()`` forgets the
    copies that exited on their own; ``close()`` stops them all, signalling every one
    before waiting for any, so their drains overlap.

    Not thread-safe, and the parent-death signal follows the thread that forks
    (``Launcher``'s essay): call it from one thread that lives as long as the pool.
    """

    def __init__(self, component: str, flags: list[str] | tuple[str, ...], *, prefix: str,
                 log_dir: Path | str, module: str | None = None,
                 env: dict[str, str] | None = None, ready_timeout_s: float = READY_TIMEOUT_S,
                 stop_timeout_s: float = STOP_TIMEOUT_S) -> None:  # fmt: skip
        self.component = component
        self.flags = tuple(flags)
        self.prefix = prefix
        self.log_dir = Path(log_dir)
        self.module = module
        self.env = env
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.members: list[ComponentProcess] = []
        self.started = 0  # copies ever started: the next one is <prefix>-<started + 1>

    def __len__(self) -> int:
        return len(self.members)

    def grow(self) -> ComponentProcess:
        """Start one more copy and wait for its ready line (``StartError`` if it fails)."""
        self.started += 1
        name = f"{self.prefix}-{self.started}"
        proc = start(self.component, *self.flags, name=name,
                     log_path=self.log_dir / f"{name}.log", env=self.env,
                     ready_timeout_s=self.ready_timeout_s, module=self.module)  # fmt: skip
        self.members.append(proc)
        return proc

    def shrink(self) -> tuple[ComponentProcess, int] | None:
        """Stop the newest copy (drained); it and its exit code, or None if none is left."""
        if not self.members:
            return None
        proc = self.members.pop()
        return proc, proc.stop(self.stop_timeout_s)

    def reap(self) -> list[ComponentProcess]:
        """The copies that exited on their own since the last look, now forgotten."""
        gone = [p for p in self.members if not p.alive()]
        for proc in gone:
            self.members.remove(proc)
            proc.stop(0)  # already exited: only reaps it and closes its pipe
        return gone

    def close(self) -> None:
        """Stop every copy: SIGTERM to all first, then wait for each (newest first)."""
        members, self.members = self.members[::-1], []
        for proc in members:
            proc.signal(signal.SIGTERM)
        for proc in members:
            proc.stop(self.stop_timeout_s)
