"""Shared zone and rules files for the DNS tests (the files live in ``data/``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import harness

DATA = Path(__file__).resolve().parent / "data"
ZONE_PATH = DATA / "example.com.zone"  # every record type; 'big' exceeds 512 bytes
RULES_PATH = DATA / "geo.toml"  # regions eu, eu-lab (nested in eu), us


@pytest.fixture
def zone_file(tmp_path):
    """A copy of the test zone that a test may edit."""
    return Path(shutil.copy(ZONE_PATH, tmp_path / "example.com.zone"))


@pytest.fixture
def rules_file(tmp_path):
    return Path(shutil.copy(RULES_PATH, tmp_path / "geo.toml"))


@pytest.fixture(scope="session")
def zone_text():
    return ZONE_PATH.read_text()


@pytest.fixture(scope="session")
def rules_text():
    return RULES_PATH.read_text()


@pytest.fixture(scope="session")
def server():
    """One server with the test zone and rules for every read-only test (starting a
    process costs ~0.5-1 s on this machine). Tests that change state spawn their own."""
    proc = harness.start("dns", "--zone", str(ZONE_PATH), "--geo", str(RULES_PATH))
    yield proc
    proc.stop(timeout_s=5)
