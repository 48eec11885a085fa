"""``topologies.process``: what it does with a component's stdout besides its ready line."""

import sys
import threading

import pytest
from topology_helpers import ENV

import harness
from topologies import process

CHATTER_BYTES = 4096 * (8 * 127 + 1)  # what ``stubborn_service --mode chatty`` prints


def drains():
    return [t for t in threading.enumerate() if t.name.startswith("stdout-drain-")]


def test_output_after_the_ready_line_is_drained_and_the_drain_ends_with_the_process(tmp_path):
    before = set(drains())
    proc = process.start("stubborn", "--mode", "chatty", name="chatty",
                         module="stubborn_service", env=ENV, log_path=tmp_path / "chatty.log")  # fmt: skip
    try:
        # 4 MiB is 64 pipes' worth: undrained, the child blocks in write and never logs.
        harness.wait_until_sync(lambda: b'"printed"' in proc.log_path.read_bytes(), 15,
                                what="the chatty component gets past its prints")  # fmt: skip
        harness.wait_until_sync(lambda: proc.stdout_discarded_bytes == CHATTER_BYTES, 5,
                                what="every byte read and counted")  # fmt: skip
        assert proc.alive()
    finally:
        proc.stop()
    assert proc.popen.stdout.closed
    assert set(drains()) <= before  # the drain thread ended with its process


def test_stdout_without_a_newline_is_not_buffered_forever(tmp_path):
    script = "import sys, time; sys.stdout.write('x' * 200000); sys.stdout.flush(); time.sleep(30)"
    with pytest.raises(process.StartError, match="no newline"):
        process.launch([sys.executable, "-c", script], log_path=tmp_path / "x.log")


def test_a_ready_line_that_is_json_but_not_an_object_is_refused(tmp_path):
    script = "print('[1, 2]', flush=True); import time; time.sleep(30)"
    with pytest.raises(process.StartError, match="expected a ready line"):
        process.launch([sys.executable, "-c", script], log_path=tmp_path / "x.log")
