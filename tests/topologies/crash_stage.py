"""Test stage: an echo server, then a component that crashes at start (CLI failure test)."""

from pathlib import Path

from topologies.topology import Component, Topology

TESTS_DIR = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": f"{TESTS_DIR / 'components' / 'common'}:{TESTS_DIR / 'topologies'}"}


def topology(options) -> Topology:
    return Topology(
        "crash_stage",
        [
            Component("echo-1", "echo", module="echo_service", env=ENV),
            Component("db", "stubborn", "--mode crash", module="stubborn_service", env=ENV),
        ],
        entry="echo-1",
    )
