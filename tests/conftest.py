import contextlib

import pytest

import harness


@pytest.fixture
def spawn():
    """Start components as real processes; every one is stopped (or killed) at teardown."""
    started = []

    def _spawn(component: str, *flags: str, **kwargs):
        proc = harness.start(component, *flags, **kwargs)
        started.append(proc)
        return proc

    yield _spawn
    for proc in reversed(started):
        with contextlib.suppress(Exception):
            proc.stop(timeout_s=5)
