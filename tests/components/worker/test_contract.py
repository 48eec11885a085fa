import pytest

import harness
from contract import ContractSuite


@pytest.fixture(scope="module", autouse=True)
def shared_queue():
    """One queue for the whole contract run: the workers under test are what changes."""
    proc = harness.start("queue")
    TestContract.queue = proc
    yield proc
    proc.stop(timeout_s=5)


class TestContract(ContractSuite):
    """The worker has no public listener: its ready line lists the admin one only."""

    component = "worker"
    flags = ("--queue", "127.0.0.1:1")  # unreachable: the worker must still start and stop

    queue = None

    def _start(self, spawn, tmp_path, *extra):
        host, port = self.queue.address()
        return spawn("worker", "--queue", f"{host}:{port}", "--reserve-timeout-s", "0", *extra)

    def test_ready_line_names_component_and_listeners(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path, "--name", "contract-1")
        assert proc.ready["component"] == "worker" and proc.ready["name"] == "contract-1"
        assert set(proc.listen) == {"admin"}
        assert proc.address("admin")[1] > 0

    def test_health_is_ok_while_serving(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path)
        harness.wait_until_sync(
            lambda: harness.http("GET", proc.url("admin") + "/health")[0] == 200,
            what="worker connected",
        )
