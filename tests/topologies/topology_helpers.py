"""Helpers for launcher tests: the echo test stage, liveness checks, an echo round trip."""

import harness
from topologies import stages
from topologies.launcher import pid_alive

TOPOLOGIES_TESTS = harness.TESTS_DIR / "topologies"
ECHO_STAGE = TOPOLOGIES_TESTS / "echo_stage.py"
CRASH_STAGE = TOPOLOGIES_TESTS / "crash_stage.py"
ENV = {
    "PYTHONPATH": f"{harness.TESTS_DIR / 'components' / 'common'}:{TOPOLOGIES_TESTS}",
}


def echo_topology(**options):
    module = stages.load(str(ECHO_STAGE))
    args = stages.default_options(module)
    vars(args).update(options)
    return module.topology(args)


def wait_all_dead(pids, timeout_s=10.0):
    harness.wait_until_sync(lambda: not any(pid_alive(p) for p in pids), timeout_s,
                            what=f"processes {pids} gone")  # fmt: skip


def echo_round_trip(address: str, line: bytes = b"hello", timeout_s: float = 10.0) -> bytes:
    return harness.exchange(address, line + b"\n", timeout_s=timeout_s)
