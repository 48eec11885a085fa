"""The memcached text protocol as a sans-IO parser: bytes in, command objects out.

memcached speaks a line protocol (memcached's ``doc/protocol.txt``): a command line of
space-separated tokens ending in ``\\r\\n`` (a bare ``\\n`` is accepted too), followed, for
storage commands only, by a data block of exactly the announced length and its own
``\\r\\n``. Because the length is announced, values are binary-safe, and because every
request is self-delimiting, a client may *pipeline*: send many commands in one write and
read the replies in order. ``RequestParser`` is built for that: ``feed()`` any number of
bytes, in any pieces, then call ``next_command()`` until it returns ``None`` ("need more
bytes"). It never touches a socket, so it is tested byte-exactly and fuzzed without a
network, and the server, the benchmarks and the tests all drive the same object.

What comes out is one small slotted object per command (``Get``, ``Store``, ``MetaGet``
...), or an ``Invalid`` carrying the exact error line memcached would send. Errors follow
protocol.txt "Error strings" and, where the document is silent, what memcached 1.6 really
does (observed against ``memcached -t 1``):

- an unknown command, or the wrong number of tokens, is ``ERROR``;
- a malformed number, key or flag is ``CLIENT_ERROR <reason>``; a storage command whose
  line is malformed does *not* swallow its data block (the block is then read as a
  command and earns its own ``ERROR``, exactly as memcached answers);
- a data block whose last two bytes are not ``\\r\\n`` is ``CLIENT_ERROR bad data chunk``;
  the announced length plus two bytes is consumed and the connection stays usable;
- a value above the item size limit (``-I``) is ``SERVER_ERROR object too large for
  cache``; its data block is swallowed, however long, without being buffered.
- a classic command ending in ``noreply`` gets no error line either, once its arity is
  right (memcached checks for the token first and then stays silent, errors included).

Bounds: a command line may be at most ``max_line_bytes`` long (retrieval lines, which
carry many keys, get ``MAX_GET_LINE_BYTES``); a longer line without a newline is
answered with ``CLIENT_ERROR line too long`` and ``Invalid.close`` asks the server to
hang up, since the rest of the stream can no longer be framed. Keys are at most 250
bytes with no space or control character; meta flags are single characters from a
per-command set, each at most once, opaque tokens at most 32 bytes.

``single_set`` is a shortcut for the server's hot path: it recognises a burst that is
exactly one plain ``set`` (the request/response client's write) without building a
``Store``, and declines everything else, so the error cases stay in one place; property
tests hold it to ``RequestParser``'s answer.

The second half is ``ResponseParser``, the client side of the same wire format, used by
``client.py``.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_LINE_BYTES",
    "MAX_GET_LINE_BYTES",
    "DEFAULT_MAX_VALUE_BYTES",
    "Reply",
    "RequestParser",
    "ResponseParser",
    "Get",
    "Store",
    "Delete",
    "Arith",
    "Touch",
    "FlushAll",
    "Version",
    "Verbosity",
    "Quit",
    "Stats",
    "MetaGet",
    "MetaSet",
    "MetaDelete",
    "MetaArith",
    "MetaNoop",
    "MetaDebug",
    "Invalid",
    "Value",
    "Line",
]

#: protocol.txt "Keys": "the length of a key must not exceed 250 characters".
MAX_KEY_BYTES = 250
#: memcached reads command lines into a 2 KiB buffer before it insists on a newline.
MAX_LINE_BYTES = 2048
#: A multi-key get may be long; memcached streams it, we bound it generously instead.
MAX_GET_LINE_BYTES = 256 * 1024
#: memcached's ``-I`` default: 1 MiB.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024
#: protocol.txt "Meta Get", flag O: "Opaque tokens may be up to 32 bytes in length".
MAX_OPAQUE_BYTES = 32
#: protocol.txt "Expiration times": an exptime above 30 days is an absolute Unix time.
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1
#: memcached takes exptime with strtol on a 64-bit long, so large values are accepted.
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


class Reply:
    """Reply lines, named as protocol.txt names them (section in brackets)."""

    #: "Error strings": the client sent a nonexistent command name (or a bad arity).
    ERROR = b"ERROR\r\n"
    #: "Storage commands": success.
    STORED = b"STORED\r\n"
    #: "Storage commands": add/replace/append/prepend condition not met.
    NOT_STORED = b"NOT_STORED\r\n"
    #: "Storage commands": cas unique no longer matches.
    EXISTS = b"EXISTS\r\n"
    #: "Storage commands", "Deletion", "Increment/Decrement", "Touch": no such item.
    NOT_FOUND = b"NOT_FOUND\r\n"
    #: "Deletion": the item was removed.
    DELETED = b"DELETED\r\n"
    #: "Touch": the expiration time was replaced.
    TOUCHED = b"TOUCHED\r\n"
    #: "Retrieval command": end of the item list.
    END = b"END\r\n"
    #: flush_all, verbosity.
    OK = b"OK\r\n"
    #: stats reset.
    RESET = b"RESET\r\n"
    #: "Meta No-Op".
    MN = b"MN\r\n"
    #: meta: success without value (HD), miss (EN), not found (NF), not stored (NS),
    #: cas mismatch (EX).
    HD = b"HD"
    EN = b"EN\r\n"
    NF = b"NF"
    NS = b"NS"
    EX = b"EX"
    BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
    BAD_DATA_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
    BAD_DELETE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
    BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
    BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
    NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"
    INVALID_FLAG = b"CLIENT_ERROR invalid flag\r\n"
    DUPLICATE_FLAG = b"CLIENT_ERROR duplicate flag\r\n"
    BAD_TOKEN = b"CLIENT_ERROR bad token in command line format\r\n"
    OPAQUE_TOO_LONG = b"CLIENT_ERROR opaque token too long\r\n"
    BAD_KEY_ENCODING = b"CLIENT_ERROR error decoding key\r\n"
    BAD_MS_MODE = b"CLIENT_ERROR invalid mode for ms M token\r\n"
    BAD_MA_MODE = b"CLIENT_ERROR invalid mode for ma M token\r\n"
    TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
    OUT_OF_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
    #: memcached's answer when it cannot build a retrieval reply.
    GET_TOO_LARGE = b"SERVER_ERROR out of memory writing get response\r\n"


# --- commands (the events of this protocol) -------------------------------------------


@dataclass(slots=True)
class Get:
    """``get``/``gets``/``gat``/``gats``: ``exptime`` is None unless it is a get-and-touch."""

    keys: list[bytes]
    with_cas: bool = False
    exptime: int | None = None


@dataclass(slots=True)
class Store:
    """``set add replace append prepend cas``: one item, its data block already read."""

    mode: bytes
    key: bytes
    flags: int
    exptime: int
    value: bytes
    cas_unique: int = 0
    noreply: bool = False


@dataclass(slots=True)
class Delete:
    key: bytes
    noreply: bool = False


@dataclass(slots=True)
class Arith:
    """``incr``/``decr``: unsigned 64-bit delta, wrap on incr, floor 0 on decr."""

    key: bytes
    delta: int
    incr: bool
    noreply: bool = False


@dataclass(slots=True)
class Touch:
    key: bytes
    exptime: int
    noreply: bool = False


@dataclass(slots=True)
class FlushAll:
    delay: int = 0
    noreply: bool = False


@dataclass(slots=True)
class Version:
    pass


@dataclass(slots=True)
class Verbosity:
    level: int
    noreply: bool = False


@dataclass(slots=True)
class Quit:
    pass


@dataclass(slots=True)
class Stats:
    """``stats [group]``: group is b"" for the general statistics."""

    group: bytes = b""


@dataclass(slots=True)
class _Meta:
    """What all meta commands share. ``flags`` maps a flag letter to its token (b"" when
    the flag takes none), in request order: return flags follow that order."""

    key: bytes
    flags: dict[str, bytes]
    #: the key as the client wrote it (base64 text under flag ``b``), echoed by ``k``.
    wire_key: bytes
    noreply: bool = False


@dataclass(slots=True)
class MetaGet(_Meta):
    pass


@dataclass(slots=True)
class MetaSet(_Meta):
    value: bytes = b""


@dataclass(slots=True)
class MetaDelete(_Meta):
    pass


@dataclass(slots=True)
class MetaArith(_Meta):
    pass


@dataclass(slots=True)
class MetaDebug:
    key: bytes
    wire_key: bytes
    base64: bool = False


@dataclass(slots=True)
class MetaNoop:
    pass


@dataclass(slots=True)
class Invalid:
    """A request that earns an error line; ``close`` when the stream cannot be framed."""

    reply: bytes
    close: bool = False
    noreply: bool = False
    #: a refused (too large) ``set`` still removes the old value, as memcached does,
    #: so a stale value cannot outlive a write that failed.
    unlink: bytes | None = None


# --- validation helpers ---------------------------------------------------------------

# protocol.txt "Keys": no control characters or whitespace.
_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]").search
_DIGITS = re.compile(rb"-?[0-9]+\Z").match
_UDIGITS = re.compile(rb"[0-9]+\Z").match


def valid_key(key: bytes) -> bool:
    return 0 < len(key) <= MAX_KEY_BYTES and _BAD_KEY_BYTE(key) is None


def parse_uint(token: bytes, limit: int) -> int | None:
    """An unsigned decimal no larger than ``limit``, or None (memcached's safe_strtoull)."""
    if _UDIGITS(token) is None:
        return None
    value = int(token)
    return value if value <= limit else None


def parse_int(token: bytes, low: int = I64_MIN, high: int = I64_MAX) -> int | None:
    if _DIGITS(token) is None:
        return None
    value = int(token)
    return value if low <= value <= high else None


# Meta flags each command accepts (protocol.txt "Meta Get/Set/Delete/Arithmetic").
# P and L are proxy hints that every meta command accepts and ignores.
_MG_FLAGS = frozenset("bcfhklOqstuvENRTPL")
_MS_FLAGS = frozenset("bcCFIkOqsTMEPL")
_MD_FLAGS = frozenset("bCIkOqTxEPL")
_MA_FLAGS = frozenset("bCENJDTMqtcvkOPL")
# Flags whose token must be a number: the parser checks them so the executor need not.
_NUMERIC_FLAGS = {
    "N": (I32_MIN, I64_MAX),
    "R": (I32_MIN, I64_MAX),
    "T": (I32_MIN, I64_MAX),
    "F": (0, U32_MAX),
    "C": (0, U64_MAX),
    "E": (0, U64_MAX),
    "J": (0, U64_MAX),
    "D": (0, U64_MAX),
}
_TOKEN_FLAGS = frozenset("NRTFCEJDMO")


# --- the request parser ---------------------------------------------------------------


class RequestParser:
    """Turns a byte stream from a client into commands, in order.

    ``feed(data)`` appends; ``next_command()`` returns the next complete command, an
    ``Invalid`` for a bad one, or ``None`` when more bytes are needed. The buffer never
    holds more than one command line plus one data block (itself bounded by
    ``max_value_bytes``).
    """

    __slots__ = ("_buf", "_pos", "_pending", "_need", "_swallow", "max_value_bytes",
                 "max_line_bytes")  # fmt: skip

    def __init__(self, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:  # fmt: skip
        self._buf = b""
        self._pos = 0
        #: a storage command waiting for its data block of ``_need`` bytes (+ CRLF).
        self._pending: Store | MetaSet | None = None
        self._need = 0
        #: bytes still to discard (the data block of a refused too-large value).
        self._swallow = 0
        self.max_value_bytes = max_value_bytes
        self.max_line_bytes = max_line_bytes

    def feed(self, data: bytes) -> None:
        if self._pos:
            # Drop what was consumed before appending, so the buffer holds only the rest.
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        elif self._buf:
            self._buf += data
        else:
            self._buf = data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into a command."""
        return len(self._buf) - self._pos

    def idle(self) -> bool:
        """True when nothing is buffered, awaited (a data block) or being swallowed."""
        return self._pending is None and not self._swallow and self._pos >= len(self._buf)

    def next_command(self):
        buf = self._buf
        if self._swallow:
            available = len(buf) - self._pos
            if available < self._swallow:
                self._swallow -= available
                self._buf, self._pos = b"", 0
                return None
            self._pos += self._swallow
            self._swallow = 0
        if self._pending is not None:
            return self._finish_data_block()
        pos = self._pos
        end = buf.find(b"\n", pos)
        if end < 0:
            waiting = len(buf) - pos
            if waiting > self.max_line_bytes and not self._may_be_long(buf, pos):
                return self._too_long()
            if waiting > MAX_GET_LINE_BYTES:
                return self._too_long()
            return None
        line_end = end - 1 if end > pos and buf[end - 1] == 13 else end  # 13 == "\r"
        line = buf[pos:line_end]
        self._pos = end + 1
        if line[:4] == b"get ":
            # The hot path: a one-key get (the key check also rejects any further space).
            key = line[4:]
            if 0 < len(key) <= MAX_KEY_BYTES and _BAD_KEY_BYTE(key) is None:
                return Get([key])
        if len(line) > self.max_line_bytes and not self._may_be_long(line, 0):
            return Invalid(Reply.LINE_TOO_LONG)
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [t for t in tokens if t]
            if not tokens:
                return Invalid(Reply.ERROR)
        handler = _HANDLERS.get(tokens[0])
        if handler is None:
            return Invalid(Reply.ERROR)
        return handler(self, tokens)

    # -- framing helpers

    def _may_be_long(self, buf: bytes, pos: int) -> bool:
        # Retrieval lines carry many keys; everything else fits memcached's 2 KiB.
        return buf.startswith(b"get", pos) or buf.startswith(b"gat", pos)

    def _too_long(self) -> Invalid:
        self._buf, self._pos = b"", 0
        return Invalid(Reply.LINE_TOO_LONG, close=True)

    def _await_data(self, command: Store | MetaSet, length: int):
        self._pending = command
        self._need = length
        return self._finish_data_block()

    def _finish_data_block(self):
        need = self._need
        start = self._pos
        buf = self._buf
        if len(buf) - start < need + 2:
            return None
        command = self._pending
        self._pending = None
        self._pos = start + need + 2
        if buf[start + need : start + need + 2] != b"\r\n":
            # memcached suppresses even this error under noreply (observed, 1.6.18).
            return Invalid(Reply.BAD_DATA_CHUNK, noreply=command.noreply)
        command.value = buf[start : start + need]
        return command

    def _refuse_value(self, length: int, reply: bytes, unlink: bytes | None = None,
                      noreply: bool = False) -> Invalid:  # fmt: skip
        """Swallow a data block we will not store (length + CRLF), then answer."""
        self._swallow = length + 2
        return Invalid(reply, noreply=noreply, unlink=unlink)

    # -- classic commands

    def _keys(self, tokens: list[bytes], start: int) -> list[bytes] | None:
        keys = tokens[start:]
        for key in keys:
            if len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None:
                return None
        return keys

    def _get(self, tokens):
        if len(tokens) == 2:  # the hot path: one key
            key = tokens[1]
            if len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None:
                return Invalid(Reply.BAD_FORMAT)
            return Get([key])
        if len(tokens) < 2:
            return Invalid(Reply.ERROR)
        keys = self._keys(tokens, 1)
        return Invalid(Reply.BAD_FORMAT) if keys is None else Get(keys)

    def _gets(self, tokens):
        if len(tokens) < 2:
            return Invalid(Reply.ERROR)
        keys = self._keys(tokens, 1)
        return Invalid(Reply.BAD_FORMAT) if keys is None else Get(keys, True)

    def _gat(self, tokens):
        # "gat <exptime>" with no key is answered END by memcached, so it is here too.
        if len(tokens) < 2:
            return Invalid(Reply.ERROR)
        exptime = parse_int(tokens[1])
        if exptime is None:
            return Invalid(Reply.BAD_EXPTIME)
        keys = self._keys(tokens, 2)
        if keys is None:
            return Invalid(Reply.BAD_FORMAT)
        return Get(keys, tokens[0] == b"gats", exptime)

    def _store(self, tokens):
        # <cmd> <key> <flags> <exptime> <bytes> [noreply]; cas adds <cas unique>.
        is_cas = tokens[0] == b"cas"
        fixed = 6 if is_cas else 5
        n = len(tokens)
        if n != fixed and n != fixed + 1:
            return Invalid(Reply.ERROR)
        key = tokens[1]
        flags = parse_uint(tokens[2], U32_MAX)
        exptime = parse_int(tokens[3])
        length = parse_uint(tokens[4], I32_MAX)
        cas_unique = parse_uint(tokens[5], U64_MAX) if is_cas else 0
        if (flags is None or exptime is None or length is None or cas_unique is None
                or len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None):  # fmt: skip
            return Invalid(Reply.BAD_FORMAT, noreply=tokens[-1] == b"noreply")
        # memcached takes the last token as noreply only when it says so; else ignores it.
        noreply = n == fixed + 1 and tokens[fixed] == b"noreply"
        if length > self.max_value_bytes:
            unlink = key if tokens[0] == b"set" else None
            return self._refuse_value(length, Reply.TOO_LARGE, unlink, noreply)
        return self._await_data(
            Store(tokens[0], key, flags, exptime, b"", cas_unique, noreply), length
        )

    def _delete(self, tokens):
        n = len(tokens)
        if n < 2 or n > 4:
            return Invalid(Reply.ERROR)
        key = tokens[1]
        if len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None:
            return Invalid(Reply.BAD_FORMAT, noreply=tokens[-1] == b"noreply")
        rest = tokens[2:]
        noreply = bool(rest) and rest[-1] == b"noreply"
        if noreply:
            rest = rest[:-1]
        # "delete <key> 0" is the legacy form with a zero hold time; anything else is not.
        if rest and rest != [b"0"]:
            return Invalid(Reply.BAD_DELETE, noreply=tokens[-1] == b"noreply")
        return Delete(key, noreply)

    def _arith(self, tokens):
        n = len(tokens)
        if n != 3 and n != 4:
            return Invalid(Reply.ERROR)
        key = tokens[1]
        if len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None:
            return Invalid(Reply.BAD_FORMAT, noreply=tokens[-1] == b"noreply")
        delta = parse_uint(tokens[2], U64_MAX)
        if delta is None:
            return Invalid(Reply.BAD_DELTA, noreply=tokens[-1] == b"noreply")
        return Arith(key, delta, tokens[0] == b"incr", n == 4 and tokens[3] == b"noreply")

    def _touch(self, tokens):
        n = len(tokens)
        if n != 3 and n != 4:
            return Invalid(Reply.ERROR)
        key = tokens[1]
        if len(key) > MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None:
            return Invalid(Reply.BAD_FORMAT, noreply=tokens[-1] == b"noreply")
        exptime = parse_int(tokens[2])
        if exptime is None:
            return Invalid(Reply.BAD_EXPTIME, noreply=tokens[-1] == b"noreply")
        return Touch(key, exptime, n == 4 and tokens[3] == b"noreply")

    def _flush_all(self, tokens):
        n = len(tokens)
        if n > 3:
            return Invalid(Reply.ERROR)
        noreply = tokens[-1] == b"noreply"
        args = tokens[1 : n - 1] if noreply else tokens[1:]
        delay = 0
        if args:
            delay = parse_int(args[0])
            if delay is None:
                return Invalid(Reply.BAD_EXPTIME, noreply=tokens[-1] == b"noreply")
        return FlushAll(delay, noreply)

    def _version(self, tokens):
        return Version() if len(tokens) == 1 else Invalid(Reply.ERROR)

    def _verbosity(self, tokens):
        n = len(tokens)
        if n != 2 and n != 3:
            return Invalid(Reply.ERROR)
        level = parse_uint(tokens[1], U32_MAX)
        if level is None:
            return Invalid(Reply.BAD_FORMAT, noreply=tokens[-1] == b"noreply")
        return Verbosity(level, n == 3 and tokens[2] == b"noreply")

    def _quit(self, tokens):
        return Quit() if len(tokens) == 1 else Invalid(Reply.ERROR)

    def _stats(self, tokens):
        if len(tokens) > 3:
            return Invalid(Reply.ERROR)
        return Stats(b" ".join(tokens[1:]))

    # -- meta commands

    def _mn(self, tokens):
        return MetaNoop()

    def _me(self, tokens):
        n = len(tokens)
        if n != 2 and n != 3:
            return Invalid(Reply.ERROR)
        wire_key = tokens[1]
        base64 = n == 3 and tokens[2] == b"b"
        key = _decode_key(wire_key) if base64 else wire_key
        if key is None:
            return Invalid(Reply.BAD_KEY_ENCODING)
        if len(wire_key) > MAX_KEY_BYTES or not base64 and _BAD_KEY_BYTE(key) is not None:
            return Invalid(Reply.BAD_FORMAT)
        return MetaDebug(key, wire_key, base64)

    def _meta(self, tokens):
        name = tokens[0]
        is_set = name == b"ms"
        if len(tokens) < (3 if is_set else 2):
            return Invalid(Reply.ERROR)
        wire_key = tokens[1]
        if len(wire_key) > MAX_KEY_BYTES:
            return Invalid(Reply.BAD_FORMAT)
        length = 0
        first_flag = 2
        if is_set:
            length = parse_uint(tokens[2], I32_MAX)
            if length is None:
                return Invalid(Reply.BAD_FORMAT)
            first_flag = 3
        allowed = _MG_FLAGS if name == b"mg" else (
            _MS_FLAGS if is_set else (_MD_FLAGS if name == b"md" else _MA_FLAGS))  # fmt: skip
        error = None
        flags: dict[str, bytes] = {}
        for token in tokens[first_flag:]:
            letter = chr(token[0])
            if letter not in allowed:
                error = Reply.INVALID_FLAG
                break
            if letter in flags:
                error = Reply.DUPLICATE_FLAG
                break
            value = token[1:]
            if letter in _TOKEN_FLAGS:
                bounds = _NUMERIC_FLAGS.get(letter)
                if bounds is not None and parse_int(value, *bounds) is None:
                    error = Reply.BAD_TOKEN
                    break
                if letter == "O" and len(value) > MAX_OPAQUE_BYTES:
                    error = Reply.OPAQUE_TOO_LONG
                    break
            elif value:
                error = Reply.INVALID_FLAG
                break
            flags[letter] = value
        if error is None and "M" in flags:
            mode = flags["M"]
            if is_set and mode not in (b"E", b"A", b"P", b"R", b"S", b"e", b"a", b"p", b"r", b"s"):
                error = Reply.BAD_MS_MODE
            elif name == b"ma" and mode not in (b"I", b"i", b"+", b"D", b"d", b"-"):
                error = Reply.BAD_MA_MODE
        key = wire_key
        if error is None and "b" in flags:
            key = _decode_key(wire_key)
            if key is None:
                error = Reply.BAD_KEY_ENCODING
        elif error is None and _BAD_KEY_BYTE(wire_key) is not None:
            error = Reply.BAD_FORMAT
        if error is not None:
            # Once the length is known, memcached swallows an ms data block it refuses.
            return self._refuse_value(length, error) if is_set else Invalid(error)
        noreply = "q" in flags
        if name == b"mg":
            return MetaGet(key, flags, wire_key, noreply)
        if is_set:
            if length > self.max_value_bytes:
                unlink = key if flags.get("M", b"S") in (b"S", b"s") else None
                return self._refuse_value(length, Reply.TOO_LARGE, unlink)
            return self._await_data(MetaSet(key, flags, wire_key, noreply), length)
        if name == b"md":
            return MetaDelete(key, flags, wire_key, noreply)
        return MetaArith(key, flags, wire_key, noreply)


#: command name -> parser method; dispatch is one dict lookup per command line.
_HANDLERS = {
    b"get": RequestParser._get,
    b"gets": RequestParser._gets,
    b"gat": RequestParser._gat,
    b"gats": RequestParser._gat,
    b"set": RequestParser._store,
    b"add": RequestParser._store,
    b"replace": RequestParser._store,
    b"append": RequestParser._store,
    b"prepend": RequestParser._store,
    b"cas": RequestParser._store,
    b"delete": RequestParser._delete,
    b"incr": RequestParser._arith,
    b"decr": RequestParser._arith,
    b"touch": RequestParser._touch,
    b"flush_all": RequestParser._flush_all,
    b"version": RequestParser._version,
    b"verbosity": RequestParser._verbosity,
    b"quit": RequestParser._quit,
    b"stats": RequestParser._stats,
    b"mg": RequestParser._meta,
    b"ms": RequestParser._meta,
    b"md": RequestParser._meta,
    b"ma": RequestParser._meta,
    b"mn": RequestParser._mn,
    b"me": RequestParser._me,
}


def single_set(data: bytes, max_value_bytes: int):
    """``(key, flags, exptime, value)`` when ``data`` is exactly one plain ``set``, else None.

    Plain means: ``set <key> <flags> <exptime> <bytes>\\r\\n<data>\\r\\n`` with unsigned
    numbers short enough to be in range, no ``noreply``, single spaces, and a data block of
    exactly the announced length within ``max_value_bytes``. Anything else (negative or
    huge numbers, a bad chunk, several commands, a piece of one) returns None and takes
    the general path, which owns every error reply. Digits-only tokens and a valid key
    cannot hold a newline, so the first CRLF really ends the command line."""
    end = data.find(b"\r\n")
    if end < 0 or data[:4] != b"set ":
        return None
    tokens = data[4:end].split(b" ")
    if len(tokens) != 4:
        return None
    key, flags, exptime, length = tokens
    # bytes.isdigit is ASCII-only and False for b""; the length bounds keep every number
    # inside the range the parser would accept (u32 flags, i64 exptime, i32 length).
    if not (flags.isdigit() and exptime.isdigit() and length.isdigit()
            and len(flags) <= 9 and len(exptime) <= 18 and len(length) <= 9):  # fmt: skip
        return None
    size = int(length)
    start = end + 2
    if (size > max_value_bytes or len(data) != start + size + 2 or data[-2:] != b"\r\n"
            or not 0 < len(key) <= MAX_KEY_BYTES or _BAD_KEY_BYTE(key) is not None):  # fmt: skip
        return None
    return key, int(flags), int(exptime), data[start:-2]


def _decode_key(text: bytes) -> bytes | None:
    try:
        key = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    return key if 0 < len(key) <= MAX_KEY_BYTES else None


def encode_key(key: bytes) -> bytes:
    """The base64 form of a binary key, for meta commands' ``b`` flag."""
    return binascii.b2a_base64(key, newline=False)


# --- the response parser (client side) ------------------------------------------------


@dataclass(slots=True)
class Value:
    """One ``VALUE <key> <flags> <bytes> [<cas>]`` item of a retrieval reply."""

    key: bytes
    flags: int
    value: bytes
    cas: int | None = None


@dataclass(slots=True)
class Line:
    """Any other reply line (``STORED``, ``END``, ``HD c5``, a number...), without CRLF.

    For ``VA`` meta replies, ``value`` holds the data block."""

    text: bytes
    value: bytes | None = None
    meta: list[bytes] = field(default_factory=list)


class ResponseParser:
    """Turns a server's byte stream into ``Value`` and ``Line`` events, in order.

    A client knows how many replies it awaits; for retrieval it collects ``Value``s until
    the ``END`` line. Data blocks are framed by their announced length, never by
    searching for CRLF, so binary values are safe.
    """

    __slots__ = ("_buf", "_pos", "max_value_bytes")

    def __init__(self, max_value_bytes: int = 64 * 1024 * 1024) -> None:
        self._buf = b""
        self._pos = 0
        self.max_value_bytes = max_value_bytes

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0
        else:
            self._buf += data

    def next_event(self) -> Value | Line | None:
        buf, pos = self._buf, self._pos
        end = buf.find(b"\r\n", pos)
        if end < 0:
            if len(buf) - pos > MAX_GET_LINE_BYTES:
                raise ValueError("reply line too long")
            return None
        if buf.startswith(b"VALUE ", pos):
            parts = buf[pos + 6 : end].split(b" ")
            if len(parts) not in (3, 4):
                raise ValueError(f"malformed VALUE line {buf[pos:end]!r}")
            length = int(parts[2])
            if length > self.max_value_bytes:
                raise ValueError("value larger than the client accepts")
            start = end + 2
            if len(buf) < start + length + 2:
                return None
            if buf[start + length : start + length + 2] != b"\r\n":
                raise ValueError("value not terminated by CRLF")
            self._pos = start + length + 2
            cas = int(parts[3]) if len(parts) == 4 else None
            return Value(parts[0], int(parts[1]), buf[start : start + length], cas)
        if buf.startswith(b"VA ", pos):
            parts = buf[pos + 3 : end].split(b" ")
            length = int(parts[0])
            start = end + 2
            if len(buf) < start + length + 2:
                return None
            self._pos = start + length + 2
            return Line(b"VA", buf[start : start + length], parts[1:])
        self._pos = end + 2
        text = buf[pos:end]
        if text[:2] in (b"HD", b"NF", b"NS", b"EX", b"EN", b"MN"):
            parts = text.split(b" ")
            return Line(parts[0], None, parts[1:])
        return Line(text)
