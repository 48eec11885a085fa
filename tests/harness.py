"""Test helpers shared by every test package: processes, deadlines, small HTTP calls.

Tests never sleep for a fixed time: they wait for a condition with a deadline
(``wait_until``), so they are as fast as the machine allows and fail clearly when the
condition never comes.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from topologies import process

TESTS_DIR = Path(__file__).resolve().parent
DEADLINE_S = 10.0


def start(component: str, *flags: str, **kwargs) -> process.ComponentProcess:
    """Start a component on port 0 and wait for its ready line (see topologies.process)."""
    return process.start(component, *flags, **kwargs)


def wait_until_sync(predicate: Callable[[], object], timeout_s: float = DEADLINE_S,
                    interval_s: float = 0.02, what: str = "condition") -> object:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(interval_s)


async def wait_until(predicate: Callable[[], object | Awaitable[object]],
                     timeout_s: float = DEADLINE_S, interval_s: float = 0.02,
                     what: str = "condition") -> object:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        await asyncio.sleep(interval_s)


def exchange(address: str, data: bytes, end: bytes = b"\n",
             timeout_s: float = DEADLINE_S) -> bytes:  # fmt: skip
    """Send ``data`` over a new TCP connection to ``host:port``; read up to ``end`` (or EOF)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(data)
        answer = b""
        while not answer.endswith(end):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
         timeout_s: float = DEADLINE_S) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """A blocking HTTP call returning (status, headers, body); errors are answers too."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
