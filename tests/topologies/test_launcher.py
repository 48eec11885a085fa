"""The launcher against real processes: start and wiring, failed starts, stop, faults."""

import io
import json
import os
import signal
import socket
import threading

import pytest
from topology_helpers import ENV, echo_round_trip, echo_topology, wait_all_dead

import harness
from topologies.launcher import (
    EXITED,
    KILLED,
    PAUSED,
    RUNNING,
    Launcher,
    pid_alive,
    process_state,
)
from topologies.process import StartError
from topologies.topology import Component, Topology


def registry(launcher) -> dict:
    return json.loads((launcher.run_dir / "endpoints.json").read_text())


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One running echo stage for the tests that only look (it saves process starts)."""
    with Launcher(echo_topology(), tmp_path_factory.mktemp("shared") / "run") as launcher:
        launcher.start()
        yield launcher


def test_start_wires_references_to_the_real_addresses(shared):
    launcher = shared
    echo_address = launcher.address("echo-1")
    assert "--upstream" in launcher["relay"].proc.argv
    assert launcher["relay"].flags[launcher["relay"].flags.index("--upstream") + 1] == echo_address
    # The relay reaches echo-1 only through the resolved address.
    assert (
        echo_round_trip(launcher.address("relay"), b"through the relay") == b"through the relay\n"
    )
    assert launcher.entry_url == "http://" + launcher.address("relay")


def test_registry_table_logs_and_data_dirs(shared):
    launcher = shared
    written = registry(launcher)
    assert list(written["components"]) == ["echo-1", "echo-2", "relay"]
    for name, entry in written["components"].items():
        assert entry["pid"] == launcher[name].proc.pid and entry["state"] == RUNNING
        assert entry["listen"] == launcher[name].listen
        assert (launcher.run_dir / f"{name}.log").stat().st_size > 0
        assert (launcher.run_dir / name).is_dir()
        assert f"--data-dir {launcher.run_dir / name}" in " ".join(entry["argv"])
    table = launcher.table()
    for name in ("echo-1", "echo-2", "relay"):
        row = next(line for line in table.splitlines() if line.startswith(name + " "))
        assert str(launcher[name].proc.pid) in row and launcher.address(name) in row
        assert launcher.address(name, "admin") in row
    assert launcher.metrics_urls()["echo-2"] == launcher.url("echo-2", "admin") + "/metrics"


def test_component_that_exits_at_start_fails_the_launch_and_stops_the_others(launch):
    bad = Component("echo-2", "echo", "--no-such-flag", module="echo_service", env=ENV)
    topology = Topology("t", [Component("echo-1", "echo", module="echo_service", env=ENV), bad],
                        entry="echo-1")  # fmt: skip
    launcher = launch(topology)
    with pytest.raises(StartError) as caught:
        launcher.start()
    message = str(caught.value)
    assert "could not start echo-2" in message
    assert "exited with code 2" in message
    assert "unrecognized arguments: --no-such-flag" in message  # the last log lines
    first = launcher["echo-1"].proc
    assert not first.alive() and first.popen.returncode == 0  # drained, not left running
    assert "echo-2" not in launcher.instances


def test_component_that_crashes_shows_its_last_log_lines(launch):
    crash = Component("db", "stubborn", "--mode crash", module="stubborn_service", env=ENV)
    launcher = launch(Topology("t", [crash], entry="db"))
    with pytest.raises(StartError, match="(?s)exited with code 3.*database file is corrupt"):
        launcher.start()


def test_component_that_stays_silent_fails_at_the_deadline(launch):
    silent = Component("db", "stubborn", "--mode silent", module="stubborn_service", env=ENV)
    launcher = launch(Topology("t", [silent], entry="db"), ready_timeout_s=1.0)
    with pytest.raises(StartError, match="(?s)no ready line within 1s.*waiting"):
        launcher.start()


def test_stop_all_goes_in_reverse_order_and_drains(launch):
    launcher = launch(echo_topology())
    launcher.start()
    launcher.stop_all()
    stopped = [e for e in launcher.events if e["event"] == "stopped"]
    assert [e["name"] for e in stopped] == ["relay", "echo-2", "echo-1"]
    assert all(e["exit_code"] == 0 for e in stopped)
    for name in ("echo-1", "echo-2", "relay"):
        assert '"event":"stopped"' in launcher[name].proc.log_tail(5)


def test_component_ignoring_sigterm_is_sigkilled_after_the_drain_timeout(launch):
    deaf = Component("deaf", "stubborn", "--mode deaf", module="stubborn_service", env=ENV)
    launcher = launch(Topology("t", [deaf], entry="deaf"), drain_timeout_s=0.1, stop_grace_s=0.1)
    launcher.start()
    launcher.stop_all()
    assert launcher["deaf"].proc.popen.returncode == -signal.SIGKILL


def test_kill_is_a_crash_and_the_rest_keep_serving(launch):
    launcher = launch(echo_topology())
    launcher.start()
    pid = launcher["echo-2"].proc.pid
    assert launcher.kill("echo-2") == -signal.SIGKILL
    assert not pid_alive(pid)
    assert registry(launcher)["components"]["echo-2"]["state"] == KILLED
    assert echo_round_trip(launcher.address("relay")) == b"hello\n"


def test_pause_holds_a_request_until_resume(launch):
    launcher = launch(echo_topology(echoes=1))
    launcher.start()
    launcher.pause("echo-1")
    assert process_state(launcher["echo-1"].proc.pid) == "T"
    assert registry(launcher)["components"]["echo-1"]["state"] == PAUSED
    host, port = launcher["echo-1"].proc.address()
    # The kernel still accepts the connection (the listen socket is open); nobody answers.
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"held\n")
        launcher.resume("echo-1")
        assert process_state(launcher["echo-1"].proc.pid) != "T"
        assert conn.recv(100) == b"held\n"
    assert registry(launcher)["components"]["echo-1"]["state"] == RUNNING


def test_stopping_a_paused_component_still_drains(launch):
    launcher = launch(echo_topology(echoes=1))
    launcher.start()
    launcher.pause("echo-1")
    assert launcher.stop("echo-1") == 0


def test_restart_keeps_ports_so_wired_components_find_it_again(launch):
    launcher = launch(echo_topology(echoes=1))
    launcher.start()
    before = dict(launcher["echo-1"].listen)
    old_pid = launcher["echo-1"].proc.pid
    launcher.restart("echo-1", hard=True)
    assert not pid_alive(old_pid)
    assert launcher["echo-1"].proc.pid != old_pid
    assert launcher["echo-1"].listen == before
    assert launcher["echo-1"].restarts == 1
    assert registry(launcher)["components"]["echo-1"]["restarts"] == 1
    # The relay was started with the old address; it still reaches echo-1.
    assert echo_round_trip(launcher.address("relay"), b"again") == b"again\n"
    # Graceful restart of a component that was killed before works the same way.
    launcher.kill("relay")
    launcher.restart("relay")
    assert echo_round_trip(launcher.address("relay")) == b"hello\n"
    events = [e["event"] for e in launcher.events]
    assert events.count("restarted") == 2


def test_check_notices_a_component_that_died_on_its_own(launch, capsys):
    launcher = launch(echo_topology(echoes=1), out=None)
    launcher.start()
    pid = launcher["echo-1"].proc.pid
    os.kill(pid, signal.SIGKILL)
    harness.wait_until_sync(lambda: launcher.check(), what="death noticed")
    assert launcher["echo-1"].state == EXITED
    assert registry(launcher)["components"]["echo-1"]["state"] == EXITED
    assert launcher.check() == []  # reported once


def test_watch_returns_once_nothing_is_left_running(launch):
    out = io.StringIO()
    launcher = launch(Topology("t", [Component("echo-1", "echo", module="echo_service", env=ENV)],
                               entry="echo-1"), out=out)  # fmt: skip
    launcher.start()
    os.kill(launcher["echo-1"].proc.pid, signal.SIGKILL)
    launcher.watch()  # no timeout: it must notice by itself
    text = out.getvalue()
    assert "echo-1 exited unexpectedly (code -9)" in text
    assert "no component left running" in text


def test_add_grows_a_running_topology(launch):
    launcher = launch(echo_topology(echoes=1))
    launcher.start()
    relay = Component("relay-2", "relay", "--upstream {echo-1}", module="relay_service", env=ENV)
    launcher.add(relay)
    assert echo_round_trip(launcher.address("relay-2")) == b"hello\n"
    assert "relay-2" in registry(launcher)["components"]


def test_unknown_name_says_which_names_exist(shared):
    launcher = shared
    with pytest.raises(KeyError, match="have: echo-1, echo-2, relay"):
        launcher.kill("web-1")


def test_no_child_survives_the_end_of_the_with_block(launch):
    with launch(echo_topology()) as launcher:
        launcher.start()
        pids = [i.proc.pid for i in launcher.instances.values()]
    wait_all_dead(pids)


def test_restart_from_a_thread_that_then_ends_does_not_kill_the_component(launch):
    # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends: a scenario
    # thread restarting a component must not take it down when it finishes.
    launcher = launch(echo_topology(echoes=1))
    launcher.start()
    worker = threading.Thread(target=launcher.restart, args=("echo-1",), kwargs={"hard": True})
    worker.start()
    worker.join()
    # join() returns before the OS thread is gone; wait for the kernel to retire it.
    harness.wait_until_sync(lambda: not os.path.exists(f"/proc/self/task/{worker.native_id}"),
                            what="thread gone")  # fmt: skip
    assert launcher["echo-1"].restarts == 1
    assert echo_round_trip(launcher.address("echo-1")) == b"hello\n"
    assert pid_alive(launcher["echo-1"].proc.pid)
