"""Differential check: random command streams, real memcached versus our sans-IO engine.

Starts ``memcached -t 1`` on a free loopback port, sends it random pipelined streams
(storage, retrieval, arithmetic, touch, meta commands, noreply, wrong data lengths), runs
the same bytes through ``RequestParser`` + ``Commands``, and prints every stream whose
replies differ. This is how the byte-exact tables in ``tests/components/cache`` were
checked. CAS values are avoided (the two counters start differently).

Known, accepted difference: memcached rewrites a shrinking incr/decr result in place,
padded with spaces (``"10"`` decremented reads back ``"9 "``); protocol.txt allows
either, we store the plain number. Streams that hit it show up here.

Usage: ``.venv/bin/python bench/cache/differential.py [--streams 300] [--seed 1]``
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from components.cache.commands import Commands  # noqa: E402
from components.cache.lru import LruCache  # noqa: E402
from components.cache.protocol import RequestParser  # noqa: E402

KEYS = [b"a", b"b", b"n"]
VALUES = [b"1", b"22", b"abc", b"", b"18446744073709551615", b"x y"]


def random_command(rnd: random.Random) -> bytes:
    k = rnd.choice(KEYS)
    v = rnd.choice(VALUES)
    nr = rnd.choice([b"", b" noreply"]) if rnd.random() < 0.2 else b""
    c = rnd.randrange(16)
    if c < 5:
        verb = rnd.choice([b"set", b"add", b"replace", b"append", b"prepend"])
        return b"%s %s %d 0 %d%s\r\n%s\r\n" % (verb, k, rnd.choice([0, 5]), len(v), nr, v)
    if c == 5:
        return b"get %s %s\r\n" % (k, rnd.choice(KEYS))
    if c == 6:
        return b"delete %s%s\r\n" % (k, nr)
    if c == 7:
        return b"incr %s %d%s\r\n" % (k, rnd.choice([1, 5, 2**64 - 1]), nr)
    if c == 8:
        return b"decr %s %d%s\r\n" % (k, rnd.choice([1, 100]), nr)
    if c == 9:
        return b"touch %s 0%s\r\n" % (k, nr)
    if c == 10:
        flags = rnd.sample([b"v", b"k", b"f", b"s", b"q", b"Oab", b"t"], rnd.randrange(4))
        return b"mg %s %s\r\n" % (k, b" ".join(flags))
    if c == 11:
        mode = rnd.choice([b"", b"MA", b"MP", b"ME", b"MR", b"F3", b"q", b"k"])
        return b"ms %s %d %s\r\n%s\r\n" % (k, len(v), mode, v)
    if c == 12:
        return b"md %s %s\r\n" % (k, rnd.choice([b"", b"q", b"k"]))
    if c == 13:
        return b"ma %s %s\r\n" % (k, rnd.choice([b"", b"v", b"N0 v", b"MD v", b"D3 q", b"N0 J7 v"]))
    if c == 14:  # a data block one byte too short or too long
        return b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v) + rnd.choice([-1, 1]), v)
    return b"mn\r\n"


def ask_memcached(port: int, stream: bytes) -> bytes:
    """Replies to ``flush_all`` + stream, up to the final MN (or a 1 s silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
        conn.sendall(b"flush_all\r\n" + stream + b"mn\r\n")
        got = b""
        marker = b"MN\r\n"
        expected = stream.count(b"mn\r\n") + 1
        while got.count(marker) < expected:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            got += chunk
    return got[len(b"OK\r\n") :]


def ask_ours(stream: bytes) -> bytes:
    commands = Commands(LruCache(64 << 20, 1 << 20))
    parser = RequestParser()
    parser.feed(stream + b"mn\r\n")
    out: list[bytes] = []
    while (command := parser.next_command()) is not None:
        commands.execute(command, time.time(), out)
    return b"".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    benchlib.require("memcached")
    port = benchlib.free_port()
    user = ["-u", "root"] if os.geteuid() == 0 else []
    workdir = Path(tempfile.mkdtemp(prefix="cache-differential-"))
    server = benchlib.start_reference(["memcached", *user, "-t", "1", "-p", str(port), "-U", "0",
                                       "-l", "127.0.0.1"], name="memcached",
                                      log_path=workdir / "memcached.log", port=port, cpus=None)  # fmt: skip
    try:
        rnd = random.Random(args.seed)
        differ = 0
        for _ in range(args.streams):
            stream = b"".join(random_command(rnd) for _ in range(12))
            theirs, ours = ask_memcached(port, stream), ask_ours(stream)
            if theirs != ours:
                differ += 1
                print(f"stream:    {stream!r}\nmemcached: {theirs!r}\nours:      {ours!r}\n")
        print(f"{differ} of {args.streams} streams differ")
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)
        workdir.rmdir()


if __name__ == "__main__":
    main()
