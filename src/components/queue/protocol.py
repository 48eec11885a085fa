"""The beanstalkd wire protocol as a sans-IO state machine (beanstalkd doc/protocol.txt).

beanstalkd speaks ASCII text lines ended by ``\\r\\n``; a ``put`` line announces a body
of exactly ``<bytes>`` bytes which must be followed by its own ``\\r\\n``. Replies are a
line, sometimes followed by a body (``RESERVED``, ``FOUND``, ``OK``) framed the same way.
This module turns bytes into events and events into bytes and never touches a socket,
which is what lets the tests feed it every malformed, truncated and oversized input.

The rules it enforces, all from protocol.txt ("Protocol" and "Producer Commands"):

- A command line is at most ``MAX_LINE_BYTES`` (224) bytes including ``\\r\\n``. A longer
  line is discarded up to its ``\\r\\n`` and answered ``BAD_FORMAT``, like beanstalkd's
  "want end-of-line" state: the buffer never grows past the bound.
- A bare ``\\n`` does not end a line; only ``\\r\\n`` does.
- Integers are unsigned decimal; ``<pri>``, ``<delay>``, ``<ttr>``, ``<bytes>`` must fit
  in 32 bits, job ids in 64. Anything else, a missing or extra argument, a trailing
  space, or a NUL byte in the line is ``BAD_FORMAT``.
- Tube names are 1-200 bytes of ``A-Za-z0-9-+/;.$_()`` and may not begin with ``-``.
- ``put`` with ``<bytes>`` above the job size limit: the body (and its ``\\r\\n``) is
  skipped, then ``JOB_TOO_BIG``. A body not followed by ``\\r\\n``: ``EXPECTED_CRLF``
  (the ``<bytes>+2`` bytes are consumed either way, as beanstalkd does).
- A command name we do not know is ``UNKNOWN_COMMAND``.

Deliberate differences: beanstalkd matches command names by prefix, so ``reservex``
gets ``BAD_FORMAT`` there and ``UNKNOWN_COMMAND`` here (we split on the first space);
``reserve-with-timeout`` above INT_MAX is ``BAD_FORMAT`` as in beanstalkd's current
source (Debian's 1.12 wraps it to a negative timeout). Everything else is checked
reply-for-reply against a real beanstalkd in tests/components/queue/test_compat.py.

The reply side has the formatters for every reply, the small YAML documents that
``stats*`` and ``list-tubes*`` return, and ``ReplyParser`` for clients (the worker and
the benchmark load tool use it).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_TUBE_NAME_BYTES",
    "DEFAULT_MAX_JOB_BYTES",
    "Reply",
    "Command",
    "Put",
    "Error",
    "CommandParser",
    "ReplyParser",
    "ParsedReply",
    "valid_tube_name",
]

#: protocol.txt: "the line's length exceeds 224 bytes including \r\n" is BAD_FORMAT.
MAX_LINE_BYTES = 224
#: protocol.txt: "<tube> is a name at most 200 bytes".
MAX_TUBE_NAME_BYTES = 200
#: beanstalkd's default ``-z``: 2**16 - 1 bytes.
DEFAULT_MAX_JOB_BYTES = (1 << 16) - 1
#: beanstalkd's hard ceiling for ``-z`` (1 GiB).
MAX_JOB_BYTES_LIMIT = 1 << 30
U32_MAX = (1 << 32) - 1
U64_MAX = (1 << 64) - 1
#: reserve-with-timeout takes a u32 but beanstalkd refuses values above INT_MAX.
MAX_RESERVE_TIMEOUT_S = (1 << 31) - 1

CRLF = b"\r\n"
NAME_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"


class Reply:
    """The fixed reply lines of protocol.txt, with the section that defines each."""

    #: "Protocol": the command line was not well-formed (length, integers, arguments).
    BAD_FORMAT = b"BAD_FORMAT\r\n"
    #: "Protocol": the server does not know the command.
    UNKNOWN_COMMAND = b"UNKNOWN_COMMAND\r\n"
    #: "Protocol": the server could not allocate memory for the job.
    OUT_OF_MEMORY = b"OUT_OF_MEMORY\r\n"
    #: "Protocol": a bug in the server; should never happen.
    INTERNAL_ERROR = b"INTERNAL_ERROR\r\n"
    #: put: the body was not followed by CR-LF.
    EXPECTED_CRLF = b"EXPECTED_CRLF\r\n"
    #: put: the body is larger than max-job-size.
    JOB_TOO_BIG = b"JOB_TOO_BIG\r\n"
    #: put: the server is draining and accepts no new jobs.
    DRAINING = b"DRAINING\r\n"
    #: reserve: a job reserved by this client is within its last second of TTR.
    DEADLINE_SOON = b"DEADLINE_SOON\r\n"
    #: reserve-with-timeout: no job became ready within the timeout.
    TIMED_OUT = b"TIMED_OUT\r\n"
    #: the job or tube does not exist, or is not in a state the command needs.
    NOT_FOUND = b"NOT_FOUND\r\n"
    #: ignore: the client tried to ignore the only tube in its watch list.
    NOT_IGNORED = b"NOT_IGNORED\r\n"
    DELETED = b"DELETED\r\n"
    RELEASED = b"RELEASED\r\n"
    #: bury succeeded (``BURIED <id>`` is the put variant, see ``buried``).
    BURIED = b"BURIED\r\n"
    TOUCHED = b"TOUCHED\r\n"
    #: kick-job succeeded (``KICKED <count>`` is kick's, see ``kicked``).
    KICKED = b"KICKED\r\n"
    PAUSED = b"PAUSED\r\n"


def inserted(job_id: int) -> bytes:
    return b"INSERTED %d\r\n" % job_id


def buried(job_id: int) -> bytes:
    return b"BURIED %d\r\n" % job_id


def reserved(job_id: int, body: bytes) -> bytes:
    return b"RESERVED %d %d\r\n%s\r\n" % (job_id, len(body), body)


def found(job_id: int, body: bytes) -> bytes:
    return b"FOUND %d %d\r\n%s\r\n" % (job_id, len(body), body)


def using(tube: str) -> bytes:
    return b"USING %s\r\n" % tube.encode()


def watching(count: int) -> bytes:
    return b"WATCHING %d\r\n" % count


def kicked(count: int) -> bytes:
    return b"KICKED %d\r\n" % count


def ok(data: bytes) -> bytes:
    """``OK <bytes>\\r\\n<data>\\r\\n``: the frame of every stats and list reply."""
    return b"OK %d\r\n%s\r\n" % (len(data), data)


def yaml_dict(pairs: list[tuple[str, object]]) -> bytes:
    """The flat YAML dictionary of stats replies: ``---\\n`` then ``key: value`` lines.

    beanstalkd 1.12 quotes only ``version``; callers quote with ``quoted`` where needed.
    """
    lines = ["---"]
    for key, value in pairs:
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}: {value}")
    return ("\n".join(lines) + "\n").encode()


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def yaml_list(names: list[str]) -> bytes:
    """``---\\n- default\\n- photos\\n``: list-tubes and list-tubes-watched."""
    return ("---\n" + "".join(f"- {name}\n" for name in names)).encode()


# ---------------------------------------------------------------------------------------
# Requests: events


class _Event:
    """Small slotted value objects (plain classes: cheaper to build than dataclasses)."""

    __slots__ = ()

    def _key(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Command(_Event):
    """Any command but put: its name as on the wire and its parsed arguments."""

    __slots__ = ("name", "args")

    def __init__(self, name: str, args: tuple = ()) -> None:
        self.name = name
        self.args = args


class Put(_Event):
    """``put <pri> <delay> <ttr> <bytes>`` with its body (already checked for CRLF)."""

    __slots__ = ("pri", "delay", "ttr", "body")

    def __init__(self, pri: int, delay: int, ttr: int, body: bytes) -> None:
        self.pri = pri
        self.delay = delay
        self.ttr = ttr
        self.body = body


class Error(_Event):
    """Input the protocol refuses; ``reply`` is beanstalkd's own error line for it."""

    __slots__ = ("reply",)

    def __init__(self, reply: bytes) -> None:
        self.reply = reply


# Argument kinds: "pri"/"secs" are u32, "id" is u64, "tube" a tube name.
# The table is the whole request surface of protocol.txt.
COMMANDS: dict[bytes, tuple[str, ...]] = {
    b"put": ("u32", "u32", "u32", "u32"),
    b"use": ("tube",),
    b"reserve": (),
    b"reserve-with-timeout": ("timeout",),
    b"reserve-job": ("u64",),
    b"delete": ("u64",),
    b"release": ("u64", "u32", "u32"),
    b"bury": ("u64", "u32"),
    b"touch": ("u64",),
    b"watch": ("tube",),
    b"ignore": ("tube",),
    b"peek": ("u64",),
    b"peek-ready": (),
    b"peek-delayed": (),
    b"peek-buried": (),
    b"kick": ("u32",),
    b"kick-job": ("u64",),
    b"stats-job": ("u64",),
    b"stats-tube": ("tube",),
    b"stats": (),
    b"list-tubes": (),
    b"list-tube-used": (),
    b"list-tubes-watched": (),
    b"pause-tube": ("tube", "u32"),
    b"quit": (),
}
_NAMES = {raw: raw.decode() for raw in COMMANDS}
_LIMITS = {"u32": U32_MAX, "u64": U64_MAX, "timeout": MAX_RESERVE_TIMEOUT_S}


def valid_tube_name(name: bytes) -> bool:
    """protocol.txt "Protocol": 1-200 bytes from NAME_CHARS, not starting with '-'."""
    return (
        0 < len(name) <= MAX_TUBE_NAME_BYTES
        and not name.translate(None, NAME_CHARS)
        and name[0] != 0x2D  # '-'
    )


_BAD_FORMAT = Error(Reply.BAD_FORMAT)
_UNKNOWN_COMMAND = Error(Reply.UNKNOWN_COMMAND)
#: Commands without arguments, pre-built: they carry no per-request state.
_BARE = {raw: Command(name) for raw, name in _NAMES.items() if not COMMANDS[raw]}


def parse_line(line: bytes) -> Command | Error | tuple[int, int, int, int]:
    """One command line (without CRLF) into a Command, an Error, or put's header.

    put's header comes back as a 4-tuple ``(pri, delay, ttr, bytes)``: the parser still
    has to read the body. The common shapes (no argument, one plain integer) take a
    short path; everything else goes through the general one, which accepts what
    beanstalkd accepts.
    """
    name, sep, rest = line.partition(b" ")
    spec = COMMANDS.get(name)
    if spec is None:
        return _UNKNOWN_COMMAND
    if not spec:
        return _BARE[name] if not sep else _BAD_FORMAT
    if len(spec) == 1 and spec[0] == "u64" and rest.isdigit() and len(rest) <= 19:
        return Command(_NAMES[name], (int(rest),))  # 19 digits always fit in a u64
    if name == b"put":
        header = put_header(rest)
        if header is not None:
            return header
    return _parse_general(name, spec, rest, line)


#: Distinct put headers remembered by ``put_header`` (a bound: any client can send new ones).
PUT_HEADER_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=PUT_HEADER_CACHE_SIZE)
def put_header(rest: bytes) -> tuple[int, int, int, int] | None:
    """put's four arguments in their plain shape (one space apart, all digits, u32), or
    None for ``_parse_general`` to judge. The parser tries it first on every put.

    Memoised: a producer tends to send the same ``<pri> <delay> <ttr> <bytes>`` over
    and over, and a hash lookup of those few bytes costs a tenth of splitting them and
    converting four integers. (A pure function of its argument, so the cache cannot
    change an answer; its size is bounded.)"""
    parts = rest.split(b" ")
    if len(parts) == 4 and b"" not in parts and b"".join(parts).isdigit():
        pri, delay, ttr, size = map(int, parts)
        if pri <= U32_MAX and delay <= U32_MAX and ttr <= U32_MAX and size <= U32_MAX:
            return pri, delay, ttr, size
    return None


def _parse_general(name: bytes, spec: tuple[str, ...], rest: bytes, line: bytes):
    if b"\x00" in line or rest.endswith(b" "):
        return _BAD_FORMAT
    if spec == ("tube",):
        # The rest of the line is the name, exactly: "use  a" names " a", which is invalid.
        if not valid_tube_name(rest):
            return _BAD_FORMAT
        return Command(_NAMES[name], (rest.decode(),))
    # beanstalkd skips runs of spaces before each integer, so "put  1 2 3 4" is fine.
    parts = rest.split(b" ")
    if b"" in parts:
        parts = [p for p in parts if p]
    if len(parts) != len(spec):
        return _BAD_FORMAT
    args: list[object] = []
    for kind, part in zip(spec, parts, strict=True):
        if kind == "tube":
            if not valid_tube_name(part):
                return _BAD_FORMAT
            args.append(part.decode())
            continue
        if not part.isdigit() or len(part) > 20:
            return _BAD_FORMAT
        value = int(part)
        if value > _LIMITS[kind]:
            return _BAD_FORMAT
        args.append(value)
    if name == b"put":
        return tuple(args)  # type: ignore[return-value]
    return Command(_NAMES[name], tuple(args))


# Parser states.
_LINE = 0  # waiting for a command line
_BODY = 1  # reading a put body of a known size
_SKIP_BODY = 2  # discarding an oversized put body, then JOB_TOO_BIG
_SKIP_LINE = 3  # discarding an over-long line up to CRLF, then BAD_FORMAT


class CommandParser:
    """Server side: bytes from one connection in, request events out.

    ``receive_data(data)`` buffers; ``next_event()`` returns the next ``Command``,
    ``Put`` or ``Error``, or ``None`` when it needs more bytes. Buffered bytes are
    bounded by one line (224 bytes) plus one body (``max_job_bytes + 2``) plus whatever
    the last ``receive_data`` brought: the caller stops reading when ``buffered`` grows.
    """

    def __init__(self, max_job_bytes: int = DEFAULT_MAX_JOB_BYTES) -> None:
        self.max_job_bytes = max_job_bytes
        self._buf = bytearray()
        self._pos = 0
        self._state = _LINE
        self._need = 0  # bytes of body (+CRLF) still expected in _BODY/_SKIP_BODY
        self._put_header: tuple[int, int, int, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]  # compact: amortised O(1) per byte
            self._pos = 0
        self._buf += data

    def whole_put(self, data: bytes) -> tuple[int, int, int, bytes] | None:
        """``(pri, delay, ttr, body)`` if ``data`` is exactly one plain, valid ``put``
        and nothing is buffered; else None, and the caller feeds ``receive_data``.

        The hot path of a producer that waits for each reply: one read is one whole put.
        Taking its fields straight from the read skips copying it into the buffer, the
        state machine and the ``Put`` event; anything else (a partial read, pipelined
        commands, an unusual spacing, an error to report) goes the general way, so the
        replies are the same either way (test_protocol checks that they agree).
        """
        if self._state != _LINE or self._pos != len(self._buf) or not data.startswith(b"put "):
            return None
        end = data.find(CRLF)
        if end < 0 or end + 2 > MAX_LINE_BYTES:
            return None
        header = put_header(data[4:end])
        if (
            header is None
            or header[3] > self.max_job_bytes
            or len(data) != end + header[3] + 4
            or not data.endswith(CRLF)
        ):
            return None
        return header[0], header[1], header[2], data[end + 2 : -2]

    def next_event(self) -> Command | Put | Error | None:
        while True:
            state = self._state
            buf = self._buf
            if state == _LINE:
                end = buf.find(CRLF, self._pos)
                if end < 0:
                    if len(buf) - self._pos >= MAX_LINE_BYTES:
                        self._enter_skip_line()
                        continue
                    return None
                start = self._pos
                self._pos = end + 2
                if end + 2 - start > MAX_LINE_BYTES:
                    return Error(Reply.BAD_FORMAT)
                result = None
                if buf.startswith(b"put ", start):  # the hot command: skip the dispatch
                    result = put_header(bytes(buf[start + 4 : end]))
                if result is None:
                    result = parse_line(bytes(buf[start:end]))
                if type(result) is tuple:
                    if result[3] > self.max_job_bytes:
                        self._state = _SKIP_BODY
                        self._need = result[3] + 2
                        continue
                    self._state = _BODY
                    self._put_header = result
                    self._need = result[3] + 2
                    continue
                return result  # type: ignore[return-value]
            if state == _BODY:
                if len(buf) - self._pos < self._need:
                    return None
                start = self._pos
                end = start + self._need
                self._pos = end
                self._state = _LINE
                header = self._put_header
                self._put_header = None
                if buf[end - 2 : end] != CRLF:
                    return Error(Reply.EXPECTED_CRLF)
                assert header is not None
                return Put(header[0], header[1], header[2], bytes(buf[start : end - 2]))
            if state == _SKIP_BODY:
                available = len(buf) - self._pos
                take = min(available, self._need)
                self._pos += take
                self._need -= take
                if self._need:
                    self._drop_consumed()
                    return None
                self._state = _LINE
                return Error(Reply.JOB_TOO_BIG)
            # _SKIP_LINE: drop bytes up to CRLF, keeping a trailing CR that may pair up.
            end = buf.find(CRLF, self._pos)
            if end < 0:
                keep = 1 if buf.endswith(b"\r") else 0
                self._pos = len(buf) - keep
                self._drop_consumed()
                return None
            self._pos = end + 2
            self._state = _LINE
            return Error(Reply.BAD_FORMAT)

    def _enter_skip_line(self) -> None:
        self._state = _SKIP_LINE

    def _drop_consumed(self) -> None:
        del self._buf[: self._pos]
        self._pos = 0


# ---------------------------------------------------------------------------------------
# Replies, parsed by clients

#: Replies followed by a body: the body size is their last argument.
_WITH_BODY = {b"RESERVED", b"FOUND", b"OK"}
MAX_REPLY_LINE_BYTES = 1024


class ProtocolViolation(Exception):
    """The server sent something that is not a beanstalkd reply."""


@dataclass(frozen=True, slots=True)
class ParsedReply:
    word: str
    args: tuple[int | str, ...] = ()
    body: bytes | None = None


class ReplyParser:
    """Client side: reply bytes in, ``ParsedReply`` out (``None`` until complete)."""

    def __init__(self, max_body_bytes: int = MAX_JOB_BYTES_LIMIT) -> None:
        self.max_body_bytes = max_body_bytes
        self._buf = bytearray()
        self._pos = 0

    def receive_data(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self) -> ParsedReply | None:
        buf = self._buf
        end = buf.find(CRLF, self._pos)
        if end < 0:
            if len(buf) - self._pos > MAX_REPLY_LINE_BYTES:
                raise ProtocolViolation("reply line too long")
            return None
        parts = bytes(buf[self._pos : end]).split(b" ")
        word = parts[0]
        args: list[int | str] = []
        for part in parts[1:]:
            args.append(int(part) if part.isdigit() else part.decode("ascii", "replace"))
        if word not in _WITH_BODY:
            self._pos = end + 2
            return ParsedReply(word.decode("ascii", "replace"), tuple(args))
        if not args or not isinstance(args[-1], int) or args[-1] > self.max_body_bytes:
            raise ProtocolViolation(f"bad {word!r} reply")
        size = args[-1]
        start = end + 2
        if len(buf) < start + size + 2:
            return None
        if buf[start + size : start + size + 2] != CRLF:
            raise ProtocolViolation("body not followed by CRLF")
        self._pos = start + size + 2
        return ParsedReply(word.decode(), tuple(args[:-1]), bytes(buf[start : start + size]))
