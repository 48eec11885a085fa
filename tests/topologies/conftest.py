"""Launcher test fixtures; the helpers they share live in ``topology_helpers.py``."""

import contextlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # topology_helpers, test stages

from topologies.launcher import Launcher  # noqa: E402


@pytest.fixture
def launch(tmp_path):
    """Make launchers on a run dir under tmp_path; every one is stopped at teardown."""
    made = []

    def _launch(topology, **kwargs):
        launcher = Launcher(topology, tmp_path / f"run-{len(made)}", **kwargs)
        made.append(launcher)
        return launcher

    yield _launch
    for launcher in made:
        with contextlib.suppress(Exception):
            launcher.close()
