"""The component contract of DESIGN.md as a test suite every component inherits.

A component's tests add ``tests/components/<name>/test_contract.py``::

    from contract import ContractSuite

    class TestContract(ContractSuite):
        component = "cache"
        flags = ("--memory-mb", "8")

and override ``flags_for(tmp_path)`` when the flags need files (zones, data dirs).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

import harness
from topologies.process import child_env

TOKEN = "s3cret-token"


class ContractSuite:
    component: str = ""
    flags: tuple[str, ...] = ()
    module: str | None = None

    def flags_for(self, tmp_path: Path) -> list[str]:
        return list(self.flags)

    def _start(self, spawn, tmp_path, *extra: str):
        return spawn(self.component, *self.flags_for(tmp_path), *extra, module=self.module)

    def test_ready_line_names_component_and_listeners(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path, "--name", "contract-1")
        assert proc.ready["event"] == "ready"
        assert proc.ready["component"] == self.component
        assert proc.ready["name"] == "contract-1"
        for role in ("main", "admin"):
            host, port = proc.address(role)
            assert host == "127.0.0.1" and port > 0, proc.listen

    def test_health_is_ok_while_serving(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path)
        status, _, body = harness.http("GET", proc.url("admin") + "/health")
        assert status == 200, body
        assert json.loads(body)["status"] == "ok"

    def test_metrics_parse_as_prometheus_text(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path)
        status, headers, body = harness.http("GET", proc.url("admin") + "/metrics")
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        families = list(text_string_to_metric_families(body.decode()))
        names = {family.name for family in families}
        assert f"scalelab_{self.component}_start_time_seconds" in names
        assert any(
            n.startswith(f"scalelab_{self.component}_") and "start_time" not in n for n in names
        ), f"{self.component} exposes no metric of its own: {sorted(names)}"

    def test_admin_operations_require_the_token(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path, "--admin-token", TOKEN)
        url = proc.url("admin") + "/admin/log-level"
        body = b'{"level": "debug"}'
        assert harness.http("POST", url, body)[0] == 401
        wrong = {"Authorization": "Bearer nope"}
        assert harness.http("POST", url, body, wrong)[0] == 401
        right = {"Authorization": f"Bearer {TOKEN}"}
        status, _, reply = harness.http("POST", url, body, right)
        assert status == 200, reply
        # Health and metrics stay open: probes and scrapers carry no token.
        assert harness.http("GET", proc.url("admin") + "/health")[0] == 200

    def test_sigterm_drains_and_exits_zero(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path, "--drain-timeout", "3")
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.popen.wait(timeout=10)
        assert code == 0, proc.log_tail()
        assert time.monotonic() - started < 3 + 2
        events = [json.loads(line)["event"] for line in proc.log_tail(50).splitlines()]
        assert "stopped" in events

    def test_unknown_flag_exits_two_with_usage(self, tmp_path):
        argv = [sys.executable, "-m", self.module or f"components.{self.component}",
                *self.flags_for(tmp_path), "--no-such-flag"]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, timeout=30, env=child_env())
        assert result.returncode == 2
        assert b"usage:" in result.stderr

    def test_logs_are_json_lines(self, spawn, tmp_path):
        proc = self._start(spawn, tmp_path)
        proc.stop()
        lines = [line for line in proc.log_tail(100).splitlines() if line.strip()]
        assert lines
        for line in lines:
            record = json.loads(line)
            assert {"ts", "level", "component", "name", "event"} <= record.keys()
