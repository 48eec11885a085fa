"""The connection's fast paths give the general path's bytes, byte for byte.

``CacheConnection.data_received`` answers a burst that is exactly one ``get <key>`` or one
plain ``set`` without the parser (``Commands.get_one``, ``protocol.single_set``,
``Commands.set_one``). These tests drive a real ``CacheConnection`` with an in-memory
transport and compare everything it writes, the cache it leaves and the statistics it
counts against the parser plus ``Commands.execute`` fed the same bursts. Hypothesis
generates the bursts: well-formed gets and sets (the fast paths), their near misses
(noreply, negative or huge numbers, bad chunks, control bytes, double spaces, binary
keys stored with ``ms ... b``) and commands cut into pieces.
"""

from __future__ import annotations

import base64
import types

from hypothesis import given, settings
from hypothesis import strategies as st

from components.cache import protocol as p
from components.cache.commands import Commands
from components.cache.lru import LruCache
from components.cache.server import CacheConnection

NOW = 1_700_000_000
MAX_VALUE = 2048
MEMORY = 64 * 1024


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes)  # one bytes object per write, never a list
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection(memory: int = MEMORY, max_value: int = MAX_VALUE):
    """A real CacheConnection on a stand-in service (what CacheService.start sets up)."""
    cache = LruCache(memory, max_value)
    service = types.SimpleNamespace(
        args=types.SimpleNamespace(max_item_size=max_value, conn_limit=8),
        cache=cache, commands=Commands(cache), now=NOW, connections=set(),
        total_connections=0, rejected_connections=0, closed_bytes_read=0,
        closed_bytes_written=0,
    )  # fmt: skip
    conn = CacheConnection(service)
    transport = Transport()
    conn.connection_made(transport)
    return conn, transport, service


def general(bursts: list[bytes], memory: int = MEMORY, max_value: int = MAX_VALUE):
    """The same bursts through the parser only: one joined reply per burst, as the server."""
    cache = LruCache(memory, max_value)
    commands = Commands(cache)
    parser = p.RequestParser(max_value)
    writes = []
    for burst in bursts:
        parser.feed(burst)
        out: list[bytes] = []
        while (command := parser.next_command()) is not None:
            if commands.execute(command, NOW, out):
                break
        if out:
            writes.append(b"".join(out))
    return writes, cache, commands


def state(cache: LruCache, commands: Commands):
    items = {key: (item.value, item.flags, item.exptime) for key, _ in cache.entries()
             if (item := cache.peek(key, NOW)) is not None}  # fmt: skip
    return items, cache.bytes, dict(commands.counters.items())


def assert_same(bursts: list[bytes], memory: int = MEMORY, max_value: int = MAX_VALUE):
    conn, transport, service = connection(memory, max_value)
    for burst in bursts:
        conn.data_received(burst)
    writes, cache, commands = general(bursts, memory, max_value)
    assert b"".join(transport.writes) == b"".join(writes)
    assert state(service.cache, service.commands) == state(cache, commands)
    assert conn.bytes_read == sum(map(len, bursts))
    assert conn.bytes_written == sum(map(len, writes))
    return transport.writes


# -- examples ------------------------------------------------------------------------


def test_get_and_set_bursts_answer_exactly_as_memcached():
    writes = assert_same([b"get k\r\n", b"set k 5 0 3\r\nabc\r\n", b"get k\r\n"])
    assert writes == [b"END\r\n", b"STORED\r\n", b"VALUE k 5 3\r\nabc\r\nEND\r\n"]


def test_a_burst_that_is_the_data_block_of_an_earlier_set_is_a_value():
    # The set line arrives alone; the next burst looks like a get but is its value.
    writes = assert_same([b"set k 0 0 5\r\n", b"get x\r\n", b"get k\r\n"])
    assert writes == [b"STORED\r\n", b"VALUE k 0 5\r\nget x\r\nEND\r\n"]


def test_a_burst_swallowed_after_a_too_large_set_is_not_a_command():
    big = MAX_VALUE + 10
    bursts = [b"set k 0 0 %d\r\n" % big, b"get k\r\n", b"x" * (big - 7) + b"\r\n", b"get k\r\n"]
    writes = assert_same(bursts)
    assert writes == [b"SERVER_ERROR object too large for cache\r\n", b"END\r\n"]


def test_a_partial_line_then_a_get_is_one_command_line():
    writes = assert_same([b"get a", b"get b\r\n", b"get c\r\n"])
    assert writes == [b"END\r\n", b"END\r\n"]  # "get aget b", then "get c"


def test_near_misses_take_the_general_path_with_its_errors():
    bursts = [
        b"get a b\r\n",  # two keys
        b"get a\r\nget b\r\n",  # two commands
        b"get \r\n",  # no key
        b"get " + b"k" * 251 + b"\r\n",  # key too long
        b"set k 0 -1 1\r\nx\r\n",  # negative exptime: expired at once
        b"set k 0 0 1 noreply\r\nx\r\n",
        b"set k 0 0 2\r\nx\r\n",  # short value: waits for more
        b"\r\n",
        b"set k 99999999999 0 1\r\nx\r\n",  # flags beyond u32
        b"set k  0 0 1\r\nx\r\n",  # double space
        b"set k 0 0 1\r\nxyz\r\n",  # bad chunk
        b"set k\x01 0 0 1\r\nx\r\n",  # control byte in the key
        b"set k 0 0 1\nx\r\n",  # bare newline ends the line
        b"set k 0 0 %d\r\n%s\r\n" % (MAX_VALUE + 1, b"x" * (MAX_VALUE + 1)),
        b"get k\r\n",
    ]
    assert_same(bursts)


def test_binary_key_stored_by_meta_set_is_not_mistaken_for_a_get_line():
    encoded = base64.b64encode(b"a b")
    bursts = [b"ms %s 1 b\r\nx\r\n" % encoded, b"get a b\r\n", b"mg %s b v\r\n" % encoded]
    writes = assert_same(bursts)
    assert writes[1] == b"END\r\n"  # two keys "a" and "b", neither stored


def test_set_larger_than_the_whole_cache_is_out_of_memory_as_before():
    # -I above -m: the item passes the item limit but not the memory limit.
    bursts = [b"set k 0 0 3\r\nold\r\n", b"set k 0 0 1500\r\n" + b"x" * 1500 + b"\r\n"]
    writes = assert_same(bursts, memory=1024, max_value=2048)
    assert writes[-1] == b"SERVER_ERROR out of memory storing object\r\n"


def test_fast_set_evicts_within_the_memory_limit():
    bursts = [b"set k%d 0 0 100\r\n%s\r\n" % (i, b"v" * 100) for i in range(100)]
    assert_same(bursts, memory=4096)


def test_expired_item_is_a_miss_on_the_fast_path():
    conn, transport, service = connection()
    conn.data_received(b"set k 0 10 1\r\nx\r\n")
    service.now = NOW + 11
    conn.data_received(b"get k\r\n")
    assert transport.writes == [b"STORED\r\n", b"END\r\n"]
    assert service.commands.counters.get_misses == 1


def test_stats_bytes_add_open_and_closed_connections():
    conn, transport, service = connection()
    conn.data_received(b"get k\r\n")
    conn.connection_lost(None)
    assert (service.closed_bytes_read, service.closed_bytes_written) == (7, 5)
    assert not service.connections


def test_single_set_parses_only_plain_sets():
    assert p.single_set(b"set k 1 2 3\r\nabc\r\n", 10) == (b"k", 1, 2, b"abc")
    for data in [b"set k 1 2 3\r\nabc\r\n\r\n", b"set k 1 2 3\r\nab\r\n", b"set k 1 2 3\r\n",
                 b"set k 1 2 3 noreply\r\nabc\r\n", b"add k 1 2 3\r\nabc\r\n",
                 b"set k 1 2 11\r\n" + b"x" * 11 + b"\r\n", b"set k 1 2 +3\r\nabc\r\n"]:  # fmt: skip
        assert p.single_set(data, 10) is None, data


# -- properties ----------------------------------------------------------------------

keys = st.sampled_from([b"a", b"k", b"key:1", b"a b", b"k\x00", b"x" * 250, b"x" * 251, b""])
numbers = st.sampled_from([b"0", b"1", b"-1", b"100", b"4294967295", b"4294967296",
                           b"99999999999999999999", b"+1", b"", b"1x"])  # fmt: skip
values = st.binary(max_size=40) | st.sampled_from([b"get a\r\n", b"x" * 300, b"\r\n"])


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(["get", "set", "set-exact", "other", "raw"]))
    key = draw(keys)
    if kind == "get":
        return b"get " + key + draw(st.sampled_from([b"\r\n", b"\n", b"", b" b\r\n"]))
    if kind in ("set", "set-exact"):
        value = draw(values)
        length = b"%d" % len(value) if kind == "set-exact" else draw(numbers)
        tail = draw(st.sampled_from([b"", b"", b" noreply", b" x"]))
        return b"set %s %s %s %s%s\r\n%s\r\n" % (key, draw(numbers), draw(numbers), length,
                                                 tail, value)  # fmt: skip
    if kind == "other":
        return draw(st.sampled_from([b"mn\r\n", b"delete a\r\n", b"incr k 1\r\n", b"bogus\r\n",
                                     b"gets k\r\n", b"append k 0 0 1\r\nz\r\n",
                                     b"ms %s 2 b\r\nhi\r\n" % base64.b64encode(b"a b")]))  # fmt: skip
    return draw(st.binary(max_size=20))


@st.composite
def bursts(draw):
    """Requests as a client writes them: mostly one per burst, sometimes cut or joined."""
    stream = draw(st.lists(requests(), min_size=1, max_size=12))
    cuts = draw(st.sampled_from(["one per burst", "random cuts", "joined"]))
    if cuts == "one per burst":
        return stream
    data = b"".join(stream)
    if cuts == "joined":
        return [data]
    points = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    pieces, last = [], 0
    for point in points + [len(data)]:
        if point > last:
            pieces.append(data[last:point])
            last = point
    return pieces


@settings(max_examples=400, deadline=None)
@given(bursts())
def test_fast_paths_give_the_general_paths_bytes(burst_list):
    assert_same(burst_list)


@settings(max_examples=200, deadline=None)
@given(keys, numbers, numbers, values)
def test_single_set_agrees_with_the_parser(key, flags, exptime, value):
    data = b"set %s %s %s %d\r\n%s\r\n" % (key, flags, exptime, len(value), value)
    fields = p.single_set(data, MAX_VALUE)
    if fields is None:
        return
    parser = p.RequestParser(MAX_VALUE)
    parser.feed(data)
    command = parser.next_command()
    assert command == p.Store(b"set", fields[0], fields[1], fields[2], fields[3])
    assert parser.next_command() is None and parser.idle()
