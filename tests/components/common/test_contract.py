"""The contract suite run against a minimal echo service: it tests the runtime itself."""

import socket
import time

import harness
from contract import ContractSuite

ECHO_ENV = {"PYTHONPATH": str(harness.TESTS_DIR / "components" / "common")}


class TestContract(ContractSuite):
    component = "echo"
    module = "echo_service"

    def _start(self, spawn, tmp_path, *extra):
        return spawn("echo", *extra, module=self.module, env=ECHO_ENV)

    def test_unknown_flag_exits_two_with_usage(self, tmp_path, monkeypatch):
        monkeypatch.setenv("PYTHONPATH", ECHO_ENV["PYTHONPATH"])
        super().test_unknown_flag_exits_two_with_usage(tmp_path)


def test_sigterm_waits_for_in_flight_work_and_health_turns_503(spawn):
    proc = spawn("echo", "--drain-timeout", "5", module="echo_service", env=ECHO_ENV)
    conn = socket.create_connection(proc.address(), timeout=5)
    conn.sendall(b"SLOW 1.0\n")
    harness.wait_until_sync(
        lambda: (
            b"scalelab_echo_lines_total 1" in harness.http("GET", proc.url("admin") + "/metrics")[2]
        ),
        what="request in flight",
    )
    proc.signal(15)
    harness.wait_until_sync(
        lambda: harness.http("GET", proc.url("admin") + "/health")[0] == 503,
        what="health 503 while draining",
    )
    assert conn.recv(100) == b"SLOW 1.0\n"  # the in-flight reply was delivered
    conn.close()
    assert proc.popen.wait(timeout=10) == 0


def test_drain_timeout_bounds_the_stop(spawn):
    proc = spawn("echo", "--drain-timeout", "0.5", module="echo_service", env=ECHO_ENV)
    conn = socket.create_connection(proc.address(), timeout=5)
    conn.sendall(b"SLOW 30\n")
    harness.wait_until_sync(
        lambda: (
            b"scalelab_echo_lines_total 1" in harness.http("GET", proc.url("admin") + "/metrics")[2]
        )
    )
    started = time.monotonic()
    proc.signal(15)
    assert proc.popen.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "drain_cut_short" in proc.log_tail()
    conn.close()


def test_port_in_use_fails_start_with_a_log_line_not_a_traceback(spawn, tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        try:
            harness.start("echo", "--port", str(port), module="echo_service", env=ECHO_ENV,
                          log_path=tmp_path / "echo.log")  # fmt: skip
        except harness.process.StartError as error:
            assert "exited with code 1" in str(error)
            assert "start_failed" in str(error)
            assert "Traceback" not in str(error)
        else:
            raise AssertionError("start on a busy port succeeded")
    finally:
        holder.close()
