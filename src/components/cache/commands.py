"""What each memcached command does: parsed commands in, cache operations, reply bytes out.

This is memcached's ``do_store_item``, ``process_arithmetic_command``, ``process_mget``
and friends, written once against the pure ``LruCache`` and the command objects of
``protocol.py``. It is still sans-IO: ``execute(command, now, out)`` appends the reply
bytes to ``out`` and says whether the client asked to quit; the server joins ``out``
into one write per read burst. That keeps every semantic rule (what ``add`` does to an
existing item, how ``cas`` fails, which meta flags come back in which order) testable
without a socket.

Semantics follow protocol.txt and, where it is silent, memcached 1.6's observed
behaviour: ``add`` on a live item answers NOT_STORED and bumps it; ``append``/``prepend``
keep the old flags and expiry; a failed (too large) ``set`` removes the old value so a
stale one cannot outlive the write; ``incr`` wraps at 2**64 and ``decr`` stops at 0;
``noreply`` suppresses success and "normal failure" replies but never errors; meta
``q`` hides HD (and EN for ``mg``) but never NS/EX/NF.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from . import protocol as p
from .lru import FETCHED, STALE, WIN_SENT, LruCache, absolute_expiry, item_size

__all__ = ["Commands", "Counters", "VERSION"]

#: What ``version`` reports: the memcached release whose behaviour we follow.
VERSION = b"1.6.18-scalelab"
U64 = 1 << 64
MAX_GET_REPLY_BYTES = 64 * 1024 * 1024
_MAX_NUMBER_DIGITS = 20  # 2**64 - 1 has 20 decimal digits
# Module constants for the fast paths (a global load, not a global plus an attribute).
_END = p.Reply.END
_STORED = p.Reply.STORED
_bad_key_byte = p._BAD_KEY_BYTE


class Counters:
    """memcached's command statistics (``stats``), plain ints: bumped on every request."""

    __slots__ = ("cmd_get", "cmd_set", "cmd_flush", "cmd_touch", "cmd_meta", "get_hits",
                 "get_misses", "get_expired", "delete_misses", "delete_hits", "incr_misses",
                 "incr_hits", "decr_misses", "decr_hits", "cas_misses", "cas_hits",
                 "cas_badval", "touch_hits", "touch_misses", "store_too_large",
                 "store_no_memory")  # fmt: skip

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def items(self) -> Iterable[tuple[str, int]]:
        return ((name, getattr(self, name)) for name in self.__slots__)


def _number(value: bytes) -> int | None:
    """An item's value as memcached's incr sees it: a decimal u64, spaces allowed around."""
    text = value.strip(b" ")
    if not text or len(text) > _MAX_NUMBER_DIGITS or not text.isdigit():
        return None
    number = int(text)
    return number if number < U64 else None


class Commands:
    """Executes commands against one cache; holds the counters ``stats`` reports."""

    __slots__ = ("cache", "counters", "settings", "server_stats", "verbosity",
                 "max_reply_bytes", "started", "_dispatch")  # fmt: skip

    def __init__(self, cache: LruCache, settings: dict[str, object] | None = None,
                 server_stats: Callable[[], Iterable[tuple[str, object]]] | None = None,
                 ) -> None:  # fmt: skip
        self.cache = cache
        self.counters = Counters()
        self.settings = settings or {}
        self.server_stats = server_stats or (lambda: ())
        self.verbosity = 0
        #: Largest reply one get may build ("get k k k ..." repeats a large value).
        self.max_reply_bytes = MAX_GET_REPLY_BYTES
        self.started = time.time()
        self._dispatch = {
            p.Get: self._get,
            p.Store: self._store,
            p.Delete: self._delete,
            p.Arith: self._arith,
            p.Touch: self._touch,
            p.FlushAll: self._flush_all,
            p.Version: self._version,
            p.Verbosity: self._verbosity,
            p.Stats: self._stats,
            p.MetaGet: self._mg,
            p.MetaSet: self._ms,
            p.MetaDelete: self._md,
            p.MetaArith: self._ma,
            p.MetaNoop: self._mn,
            p.MetaDebug: self._me,
            p.Invalid: self._invalid,
        }

    def execute(self, command, now: float, out: list[bytes]) -> bool:
        """Append the reply to ``out``; True when the connection should close after it."""
        handler = self._dispatch.get(type(command))
        if handler is None:  # Quit
            return True
        return handler(command, now, out) or False

    # -- classic retrieval

    def _get(self, cmd: p.Get, now: float, out: list[bytes]) -> None:
        cache = self.cache
        counters = self.counters
        touch = cmd.exptime is not None
        if not touch and not cmd.with_cas:
            # The hot path: the stored entry already ends in " <flags> <bytes>\r\n
            # <value>\r\n", so a hit costs two appends and no formatting.
            get_tail = cache.get_tail
            start = len(out)
            size = 0
            for key in cmd.keys:
                tail = get_tail(key, now)
                if tail is None:
                    counters.get_misses += 1
                else:
                    counters.get_hits += 1
                    out.append(b"VALUE " + key)
                    out.append(tail)
                    size += len(tail)
                    if size > self.max_reply_bytes:
                        del out[start:]
                        out.append(p.Reply.GET_TOO_LARGE)
                        return
            counters.cmd_get += len(cmd.keys)
            out.append(p.Reply.END)
            return
        expiry = absolute_expiry(cmd.exptime, now) if touch else 0
        start = len(out)
        size = 0
        for key in cmd.keys:
            item = cache.peek(key, now)
            if touch:
                counters.cmd_touch += 1
            counters.cmd_get += 1
            if item is None:
                counters.get_misses += 1
                if touch:
                    counters.touch_misses += 1
                continue
            counters.get_hits += 1
            if touch:
                counters.touch_hits += 1
                item.exptime = expiry
            cache.bump(key, item, now)
            value = item.value
            if cmd.with_cas:
                out.append(b"VALUE %s %d %d %d\r\n" % (key, item.flags, len(value), item.cas))
            else:
                out.append(b"VALUE %s %d %d\r\n" % (key, item.flags, len(value)))
            out.append(value)
            out.append(b"\r\n")
            size += len(value)
            if size > self.max_reply_bytes:
                del out[start:]
                out.append(p.Reply.GET_TOO_LARGE)
                return
        out.append(p.Reply.END)

    def get_one(self, key: bytes, now: float) -> bytes | None:
        """The whole reply to ``get <key>``, or None when ``key`` is not one valid key.

        The server's fast path for a burst that is one ``get``: no ``Get`` object, no
        reply list. An invalid "key" (a space: several keys; a control byte: maybe
        several commands) is left to the parser, which owns the error replies."""
        if len(key) > p.MAX_KEY_BYTES or _bad_key_byte(key) is not None or not key:
            return None
        tail = self.cache.get_tail(key, now)
        counters = self.counters
        counters.cmd_get += 1
        if tail is None:
            counters.get_misses += 1
            return _END
        counters.get_hits += 1
        return b"VALUE " + key + tail + _END

    # -- classic storage

    def _store(self, cmd: p.Store, now: float, out: list[bytes]) -> None:
        reply = self._do_store(cmd, now)
        if not cmd.noreply:  # memcached stays silent under noreply, errors included
            out.append(reply)

    def set_one(self, key: bytes, flags: int, exptime: int, value: bytes, now: float) -> bytes:
        """``set`` (no noreply): the reply line. The server's fast path and ``_do_store``."""
        cache = self.cache
        self.counters.cmd_set += 1
        if cache.put(key, value, flags, absolute_expiry(exptime, now), now):
            return _STORED
        if item_size(key, value, flags) > cache.max_item_bytes:
            self.counters.store_too_large += 1
            cache.delete(key)  # memcached: a failed set must not leave the old value
            return p.Reply.TOO_LARGE
        return self._no_memory()  # larger than the whole cache (-m below -I)

    def _do_store(self, cmd: p.Store, now: float) -> bytes:
        mode = cmd.mode
        key = cmd.key
        if mode == b"set":
            return self.set_one(key, cmd.flags, cmd.exptime, cmd.value, now)
        cache = self.cache
        self.counters.cmd_set += 1
        if item_size(key, cmd.value, cmd.flags) > cache.max_item_bytes:
            self.counters.store_too_large += 1
            return p.Reply.TOO_LARGE
        old = cache.get(key, now)
        if mode == b"add":
            if old is not None:  # the get above bumped it, as memcached's add does
                return p.Reply.NOT_STORED
        elif mode == b"cas":
            if old is None:
                self.counters.cas_misses += 1
                return p.Reply.NOT_FOUND
            if old.cas != cmd.cas_unique:
                self.counters.cas_badval += 1
                return p.Reply.EXISTS
            self.counters.cas_hits += 1
        elif old is None:  # replace, append, prepend need an existing item
            return p.Reply.NOT_STORED
        elif mode == b"append":
            stored = cache.replace_value(key, old, old.value + cmd.value, now)
            return p.Reply.STORED if stored is not None else p.Reply.TOO_LARGE
        elif mode == b"prepend":
            stored = cache.replace_value(key, old, cmd.value + old.value, now)
            return p.Reply.STORED if stored is not None else p.Reply.TOO_LARGE
        stored = cache.set(key, cmd.value, cmd.flags, absolute_expiry(cmd.exptime, now), now)
        return p.Reply.STORED if stored is not None else self._no_memory()

    def _no_memory(self) -> bytes:
        self.counters.store_no_memory += 1
        return p.Reply.OUT_OF_MEMORY

    def _delete(self, cmd: p.Delete, now: float, out: list[bytes]) -> None:
        item = self.cache.get(cmd.key, now)
        if item is not None:
            self.cache.delete(cmd.key)
            self.counters.delete_hits += 1
            reply = p.Reply.DELETED
        else:
            self.counters.delete_misses += 1
            reply = p.Reply.NOT_FOUND
        if not cmd.noreply:
            out.append(reply)

    def _apply_delta(self, key: bytes, item, incr: bool, delta: int, now: float,
                     new_cas: int = 0):  # fmt: skip
        """(new number, stored item) or a reply line when the value is not a number."""
        number = _number(item.value)
        if number is None:
            return p.Reply.NON_NUMERIC, None
        number = (number + delta) % U64 if incr else max(0, number - delta)
        stored = self.cache.replace_value(key, item, b"%d" % number, now, new_cas)
        if stored is None:
            return self._no_memory(), None
        return number, stored

    def _arith(self, cmd: p.Arith, now: float, out: list[bytes]) -> None:
        item = self.cache.get(cmd.key, now)
        counters = self.counters
        if item is None:
            if cmd.incr:
                counters.incr_misses += 1
            else:
                counters.decr_misses += 1
            if not cmd.noreply:
                out.append(p.Reply.NOT_FOUND)
            return
        number, stored = self._apply_delta(cmd.key, item, cmd.incr, cmd.delta, now)
        if stored is None:
            if not cmd.noreply:  # an error line, silenced by noreply as memcached does
                out.append(number)
            return
        if cmd.incr:
            counters.incr_hits += 1
        else:
            counters.decr_hits += 1
        if not cmd.noreply:
            out.append(b"%d\r\n" % number)

    def _touch(self, cmd: p.Touch, now: float, out: list[bytes]) -> None:
        self.counters.cmd_touch += 1
        item = self.cache.peek(cmd.key, now)
        if item is None:
            self.counters.touch_misses += 1
            reply = p.Reply.NOT_FOUND
        else:
            self.counters.touch_hits += 1
            self.cache.touch(cmd.key, item, absolute_expiry(cmd.exptime, now))
            reply = p.Reply.TOUCHED
        if not cmd.noreply:
            out.append(reply)

    # -- administration

    def _flush_all(self, cmd: p.FlushAll, now: float, out: list[bytes]) -> None:
        self.counters.cmd_flush += 1
        self.cache.flush(now, max(0, cmd.delay))
        if not cmd.noreply:
            out.append(p.Reply.OK)

    def _version(self, cmd, now: float, out: list[bytes]) -> None:
        out.append(b"VERSION " + VERSION + b"\r\n")

    def _verbosity(self, cmd: p.Verbosity, now: float, out: list[bytes]) -> None:
        self.verbosity = cmd.level
        if not cmd.noreply:
            out.append(p.Reply.OK)

    def _invalid(self, cmd: p.Invalid, now: float, out: list[bytes]) -> bool:
        if cmd.unlink is not None:
            self.counters.store_too_large += 1
            self.cache.delete(cmd.unlink)
        if not cmd.noreply:
            out.append(cmd.reply)
        return cmd.close

    def _stats(self, cmd: p.Stats, now: float, out: list[bytes]) -> None:
        group = cmd.group
        if group == b"":
            rows = self.general_stats(now)
        elif group == b"settings":
            rows = list(self.settings.items())
        elif group == b"items":
            rows = self._items_stats(now)
        elif group == b"slabs":
            rows = self._slabs_stats()
        elif group == b"reset":
            self.counters = Counters()
            cache = self.cache
            cache.evictions = cache.reclaimed = cache.total_items = 0
            cache.expired_unfetched = cache.evicted_unfetched = 0
            out.append(p.Reply.RESET)
            return
        else:
            out.append(p.Reply.ERROR)
            return
        for name, value in rows:
            out.append(f"STAT {name} {value}\r\n".encode())
        out.append(p.Reply.END)

    def general_stats(self, now: float) -> list[tuple[str, object]]:
        cache = self.cache
        usage = os.times()
        rows: list[tuple[str, object]] = [
            ("pid", os.getpid()),
            ("uptime", max(0, int(now - self.started))),
            ("time", int(now)),
            ("version", VERSION.decode()),
            ("pointer_size", 64),
            ("rusage_user", f"{usage.user:.6f}"),
            ("rusage_system", f"{usage.system:.6f}"),
        ]
        rows.extend(self.server_stats())
        rows.extend(self.counters.items())
        rows += [
            ("limit_maxbytes", cache.max_bytes),
            ("threads", 1),
            ("bytes", cache.bytes),
            ("curr_items", len(cache)),
            ("total_items", cache.total_items),
            ("expired_unfetched", cache.expired_unfetched),
            ("evicted_unfetched", cache.evicted_unfetched),
            ("evictions", cache.evictions),
            ("reclaimed", cache.reclaimed),
        ]
        return rows

    def _items_stats(self, now: float) -> list[tuple[str, object]]:
        # One LRU, so one "slab class": memcached users still find the figures they read.
        cache = self.cache
        if not len(cache):
            return []
        oldest = cache.peek_oldest()
        age = int(now - oldest.atime) if oldest is not None else 0
        return [
            ("items:1:number", len(cache)),
            ("items:1:age", max(0, age)),
            ("items:1:mem_requested", cache.bytes),
            ("items:1:evicted", cache.evictions),
            ("items:1:reclaimed", cache.reclaimed),
            ("items:1:expired_unfetched", cache.expired_unfetched),
            ("items:1:evicted_unfetched", cache.evicted_unfetched),
        ]

    def _slabs_stats(self) -> list[tuple[str, object]]:
        # No slab allocator here: Python's allocator hands out exact sizes. Report one
        # class holding every item, and the totals memcached prints after the classes.
        cache = self.cache
        rows: list[tuple[str, object]] = []
        if len(cache):
            rows += [
                ("1:chunk_size", cache.bytes // len(cache)),
                ("1:used_chunks", len(cache)),
                ("1:mem_requested", cache.bytes),
            ]
        rows += [("active_slabs", 1 if len(cache) else 0), ("total_malloced", cache.bytes)]
        return rows

    # -- meta commands (protocol.txt "Meta Commands")

    def _mn(self, cmd, now: float, out: list[bytes]) -> None:
        out.append(p.Reply.MN)

    def _me(self, cmd: p.MetaDebug, now: float, out: list[bytes]) -> None:
        item = self.cache.peek(cmd.key, now)
        if item is None:
            out.append(p.Reply.EN)
            return
        exp = item.ttl(now)
        out.append(
            b"ME %s exp=%d la=%d cas=%d fetch=%s cls=1 size=%d\r\n"
            % (
                cmd.wire_key,
                exp,
                max(0, int(now - item.atime)),
                item.cas,
                b"yes" if item.bits & FETCHED else b"no",
                item_size(cmd.key, item.value, item.flags),
            )  # fmt: skip
        )

    @staticmethod
    def _return_flags(cmd, item, now: float, hit_before: int = 0, last_access: int = 0
                      ) -> list[bytes]:  # fmt: skip
        """The flags a meta reply echoes, in the order the request listed them."""
        parts: list[bytes] = []
        for letter, token in cmd.flags.items():
            if letter == "O":
                parts.append(b"O" + token)
            elif letter == "k":
                parts.append(b"k" + cmd.wire_key)
            elif item is None:
                continue
            elif letter == "c":
                parts.append(b"c%d" % item.cas)
            elif letter == "f":
                parts.append(b"f%d" % item.flags)
            elif letter == "s":
                parts.append(b"s%d" % len(item.value))
            elif letter == "t":
                parts.append(b"t%d" % item.ttl(now))
            elif letter == "h":
                parts.append(b"h%d" % (hit_before or 0))
            elif letter == "l":
                parts.append(b"l%d" % last_access)
        if "b" in cmd.flags and "k" in cmd.flags:
            parts.append(b"b")
        return parts

    @staticmethod
    def _line(code: bytes, parts: list[bytes]) -> bytes:
        return code + b" " + b" ".join(parts) + b"\r\n" if parts else code + b"\r\n"

    def _mg(self, cmd: p.MetaGet, now: float, out: list[bytes]) -> None:
        cache = self.cache
        flags = cmd.flags
        counters = self.counters
        counters.cmd_meta += 1
        counters.cmd_get += 1
        key = cmd.key
        item = cache.peek(key, now)  # as it was before this access: h and l report that
        extra: list[bytes] = []
        if item is None:
            counters.get_misses += 1
            if "N" not in flags:
                if not cmd.noreply:  # a miss still echoes O and k (memcached 1.6)
                    out.append(self._line(b"EN", self._return_flags(cmd, None, now)))
                return
            # Vivify on miss: an empty placeholder, and this client "wins" the recache.
            item = cache.set(key, b"", 0, absolute_expiry(int(flags["N"]), now), now,
                             cas=int(flags["E"]) if "E" in flags else 0, bits=WIN_SENT)  # fmt: skip
            if item is None:
                out.append(self._no_memory())
                return
            extra.append(b"W")
            hit_before, last_access = None, 0
        else:
            counters.get_hits += 1
            hit_before = 1 if item.bits & FETCHED else 0
            last_access = max(0, int(now - item.atime))
            bits = item.bits
            if "T" in flags:
                counters.cmd_touch += 1
                counters.touch_hits += 1
            win = False
            if item.bits & WIN_SENT:
                extra.append(b"Z")
            elif item.bits & STALE:
                win = True
            elif "R" in flags:
                ttl = item.ttl(now)
                win = ttl != -1 and ttl < int(flags["R"])
            if item.bits & STALE:
                extra.append(b"X")
            if win:
                item.bits |= WIN_SENT
                extra.append(b"W")
        # Return flags describe the item as found (memcached: "mg k t T30" answers the old
        # TTL); the new TTL, the access and the win are written back after.
        parts = self._return_flags(cmd, item, now, hit_before, last_access) + extra
        if hit_before is not None:
            if "T" in flags:
                item.exptime = absolute_expiry(int(flags["T"]), now)
            if "u" not in flags:
                cache.bump(key, item, now)
            elif item.bits != bits or "T" in flags:
                cache.update(key, item)
        if "v" in flags:
            value = item.value
            out.append(self._line(b"VA %d" % len(value), parts))
            out.append(value)
            out.append(b"\r\n")
        else:
            out.append(self._line(p.Reply.HD, parts))

    def _ms(self, cmd: p.MetaSet, now: float, out: list[bytes]) -> None:
        cache = self.cache
        flags = cmd.flags
        self.counters.cmd_meta += 1
        self.counters.cmd_set += 1
        key = cmd.key
        value = cmd.value
        client_flags = int(flags.get("F") or 0)
        if item_size(key, value, client_flags) > cache.max_item_bytes:
            self.counters.store_too_large += 1
            out.append(p.Reply.TOO_LARGE)
            return
        mode = flags.get("M", b"S").upper()
        exptime = absolute_expiry(int(flags["T"]), now) if "T" in flags else 0
        new_cas = int(flags["E"]) if "E" in flags else 0
        old = cache.get(key, now)
        code = p.Reply.HD
        stale = False
        if "C" in flags:
            compare = int(flags["C"])
            if old is None:
                code = p.Reply.NF
            elif old.cas != compare:
                # I: an older CAS may still write, but the result is marked stale.
                if "I" in flags and compare < old.cas:
                    stale = True
                else:
                    code = p.Reply.EX
        if code is p.Reply.HD and (
            (mode == b"E" and old is not None) or (mode in (b"R", b"A", b"P") and old is None)
        ):
            code = p.Reply.NS
        item = None
        if code is p.Reply.HD:
            if mode == b"A":
                value = old.value + value
            elif mode == b"P":
                value = value + old.value
            bits = STALE if stale else 0
            if mode in (b"A", b"P"):
                item = cache.set(key, value, old.flags, old.exptime, now, new_cas, bits)
            else:
                item = cache.set(key, value, client_flags, exptime, now, new_cas, bits)
            if item is None:
                out.append(self._no_memory())
                return
        parts = []
        for letter, token in flags.items():
            if letter == "O":
                parts.append(b"O" + token)
            elif letter == "k":
                parts.append(b"k" + cmd.wire_key)
            elif letter == "c":
                parts.append(b"c%d" % (item.cas if item is not None else 0))
        if "b" in flags and "k" in flags:
            parts.append(b"b")
        if code is p.Reply.HD and cmd.noreply:
            return
        out.append(self._line(code, parts))

    def _md(self, cmd: p.MetaDelete, now: float, out: list[bytes]) -> None:
        cache = self.cache
        flags = cmd.flags
        self.counters.cmd_meta += 1
        key = cmd.key
        item = cache.peek(key, now)
        if item is None:
            self.counters.delete_misses += 1
            code = p.Reply.NF
        elif "C" in flags and int(flags["C"]) != item.cas:
            code = p.Reply.EX
        else:
            self.counters.delete_hits += 1
            code = p.Reply.HD
            if "x" in flags:
                # x (newer protocol.txt): drop the value, keep the item and its flags.
                item = cache.replace_value(key, item, b"", now) or item
            if "I" in flags:
                # Invalidate instead of removing: clients see X and one wins the recache.
                item.bits = (item.bits | STALE) & ~WIN_SENT
                item.cas = int(flags["E"]) if "E" in flags else cache.next_cas()
                if "T" in flags:
                    item.exptime = absolute_expiry(int(flags["T"]), now)
                cache.update(key, item)
            elif "x" not in flags:
                cache.delete(key)
        if code is p.Reply.HD and cmd.noreply:
            return
        out.append(self._line(code, self._return_flags(cmd, None, now)))

    def _ma(self, cmd: p.MetaArith, now: float, out: list[bytes]) -> None:
        cache = self.cache
        flags = cmd.flags
        counters = self.counters
        counters.cmd_meta += 1
        key = cmd.key
        incr = flags.get("M", b"I") in (b"I", b"i", b"+")
        delta = int(flags.get("D") or 1)
        item = cache.get(key, now)
        code = p.Reply.HD
        if item is None:
            if incr:
                counters.incr_misses += 1
            else:
                counters.decr_misses += 1
            if "N" in flags:
                initial = int(flags.get("J") or 0)
                item = cache.set(key, b"%d" % initial, 0,
                                 absolute_expiry(int(flags["N"]), now), now)  # fmt: skip
                if item is None:
                    out.append(self._no_memory())
                    return
            else:
                code = p.Reply.NF
        elif "C" in flags and int(flags["C"]) != item.cas:
            code = p.Reply.EX
        else:
            new_cas = int(flags["E"]) if "E" in flags else 0
            result, stored = self._apply_delta(key, item, incr, delta, now, new_cas)
            if stored is None:
                out.append(result)
                return
            item = stored
            if incr:
                counters.incr_hits += 1
            else:
                counters.decr_hits += 1
            if "T" in flags:
                cache.touch(key, item, absolute_expiry(int(flags["T"]), now))
        shown = item if code is p.Reply.HD else None
        parts = self._return_flags(cmd, shown, now)
        if code is p.Reply.HD and "v" in flags:
            out.append(self._line(b"VA %d" % len(item.value), parts))
            out.append(item.value)
            out.append(b"\r\n")
            return
        if code is p.Reply.HD and cmd.noreply:
            return
        out.append(self._line(code, parts))
