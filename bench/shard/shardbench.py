"""What the shard benchmarks share: our servers started pinned, and JSON posts.

Scripts in this directory import it by name (a script's own directory is on its path).
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib

import benchlib  # noqa: E402
from topologies import process  # noqa: E402


class Servers:
    """Components started with their ready line, pinned to the servers' CPU, logs in
    ``work``; ``stop`` stops them all by PID."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.started: list[process.ComponentProcess] = []

    def start(self, component: str, name: str, *flags: str) -> process.ComponentProcess:
        proc = process.start(component, *flags, name=name, log_path=self.work / f"{name}.log")
        self.started.append(proc)
        benchlib.pin(proc.pid)
        return proc

    def stop(self) -> None:
        benchlib.stop_all(self.started)


def post(url: str, doc, timeout_s: float = 120) -> dict:
    """POST ``doc`` as JSON; the answer, after checking no statement in it failed."""
    request = urllib.request.Request(url, data=json.dumps(doc).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        answer = json.loads(response.read())
    for result in answer.get("results", []) if isinstance(answer, dict) else []:
        if "error" in result:
            raise benchlib.BenchError(f"{url}: {result['error']}")
    return answer
