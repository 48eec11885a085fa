import pytest


@pytest.fixture
def store(spawn, tmp_path):
    """Start a store node on port 0 with its own data directory."""

    def _store(name="s1", *flags):
        return spawn("store", "--data-dir", str(tmp_path / name), *flags, name=name)

    return _store
