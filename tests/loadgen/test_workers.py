"""The parent/worker pipe: a large message arriving in pieces is read whole."""

import asyncio
import pickle
import socket
import struct
import threading
import time
from multiprocessing.connection import Connection

import uvloop

from loadgen.workers import watch


def test_a_large_message_whose_payload_arrives_late_is_read_whole():
    # Connection sends a message over 16 KiB as a 4-byte length, then the payload. Under
    # uvloop add_reader makes the descriptor non-blocking; a recv that found only the
    # length raised BlockingIOError, which the parent took for a dead worker.
    message = ("done", {"timeline": {str(i): list(range(20)) for i in range(2000)}})
    payload = pickle.dumps(message)
    assert len(payload) > 16 * 1024
    ours, theirs = socket.socketpair()
    conn = Connection(ours.detach())
    got = []

    def write() -> None:
        theirs.sendall(struct.pack("!i", len(payload)))
        time.sleep(0.2)
        theirs.sendall(payload)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def on_message() -> None:
            loop.remove_reader(conn.fileno())
            try:
                got.append(conn.recv())
            except Exception as error:  # the bug: BlockingIOError
                got.append(error)
            done.set()

        watch(loop, conn, on_message)
        writer = threading.Thread(target=write)
        writer.start()
        await asyncio.wait_for(done.wait(), 10)
        writer.join(10)

    try:
        uvloop.run(main())
    finally:
        conn.close()
        theirs.close()
    assert got == [message]
