"""Test stage: two echo servers and a relay wired to the first (launcher and CLI tests).

It is a topology file as a reader would write one, run with
``scalelab run tests/topologies/echo_stage.py``.
"""

from pathlib import Path

from topologies.topology import Component, Topology

TESTS_DIR = Path(__file__).resolve().parents[1]
ENV = {
    "PYTHONPATH": f"{TESTS_DIR / 'components' / 'common'}:{TESTS_DIR / 'topologies'}",
}


def add_arguments(parser) -> None:
    parser.add_argument("--echoes", type=int, default=2, help="echo servers")


def topology(options) -> Topology:
    echoes = [
        Component(f"echo-{n}", "echo", module="echo_service", env=ENV)
        for n in range(1, options.echoes + 1)
    ]
    relay = Component("relay", "relay", "--upstream {echo-1}", module="relay_service", env=ENV)
    return Topology("echo_stage", [*echoes, relay], entry="relay")
