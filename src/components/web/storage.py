"""Where users live: a small storage interface and its SQLite implementation.

The web tier asks its database five things: get, create, replace and delete a user, and
seed the first N users. ``UserStore`` is exactly that, so the journey can swap the
database without touching a handler: stage 1 embeds SQLite in the web process
(``--db sqlite:PATH``, this module); later stages point ``--db`` at the store tier
(``--db store:HOST:PORT,...``, ``store_tier.py``), one more entry in ``BACKENDS``.

SQLite is run the way a single-server deployment should run it:

- WAL journal mode (https://sqlite.org/wal.html): readers do not block the writer and a
  commit appends to the log instead of rewriting pages;
- ``synchronous=FULL`` by default: each commit fsyncs the WAL, so an acknowledged write
  survives a power cut, not only a crash of our process (``NORMAL`` is faster and
  survives ``kill -9`` but may lose the last commits on power loss);
- two connections, each driven by its own aiosqlite worker thread so the event loop
  never blocks on disk: a *writer* (SQLite allows one writer at a time anyway) and a
  *reader*. Under WAL a reader sees every transaction committed before its statement
  began, so reads never wait behind a writer's fsync, and a read issued after a write
  was acknowledged sees that write.

A replicated store that offers read-your-writes needs to know, on a read, the log
position of the reader's last write. That is request context, not a parameter of
``get``: the middleware in ``server.py`` carries it in a cookie read into a
``contextvars.ContextVar`` (``consistency.py``) that the backend consults, and sets the
cookie again from the position the backend reports after a write.

Photos (the queued stage, ``photos.py``) live in the same database, with the same
durability as users: a ``photos`` row per ``POST /photos`` (its job, its state) and, once
a worker stored it, the thumbnail's bytes and digest. The interface adds six questions
for them: create, get, get the thumbnail, store it (one conditional ``UPDATE``, so a
redelivered job stores nothing new), mark a photo failed, and list the photos stuck
pending since a given time (to publish their jobs again).

The schema keeps the user's scalar fields in columns (what a relational schema would
do) and the phone list as a JSON array. Seeding is idempotent: the ``meta`` table
remembers how many seed users were written, so a restart with the same ``--seed-users``
writes nothing, a larger N adds only the new ids, and a deleted seed user stays deleted.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Awaitable, Callable

import aiosqlite
import orjson

from components.worker.photo import PhotoJob

from .photos import PHOTO_COLUMNS, Photo, State, StoreOutcome, classify_store, photo_from_row
from .seed import seed_user

#: Rows per ``executemany`` while seeding: one transaction, bounded parameter lists.
SEED_BATCH_ROWS = 5_000
MAX_SEED_USERS = 10_000_000
SYNCHRONOUS_MODES = ("normal", "full")

_COLUMNS = "first_name, last_name, street_address, city, state, postal_code, phone_numbers"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    street_address TEXT NOT NULL,
    city TEXT NOT NULL,
    state TEXT NOT NULL,
    postal_code TEXT NOT NULL,
    phone_numbers TEXT NOT NULL  -- JSON array of {type, number}
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
#: The photo pipeline's table, the same in both backends (``store_tier.py`` runs it too).
PHOTOS_SCHEMA = """CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    thumb INTEGER NOT NULL,
    state TEXT NOT NULL,             -- photos.State: pending | done | failed
    digest TEXT,                     -- SHA-256 (hex) of the thumbnail, once done
    error TEXT,                      -- why it failed
    thumbnail_bytes INTEGER NOT NULL, -- the size the job's thumbnail must have
    thumbnail BLOB,                  -- RGB bytes (base64 text through the store tier)
    created_at REAL NOT NULL         -- Unix time of the POST (finds stuck pending photos)
)"""
# The statements both backends run; the conditional UPDATE is what makes a store
# idempotent and race-free (photos.py): it changes a row only while it is not done.
PHOTO_INSERT = (
    "INSERT INTO photos (image, width, height, thumb, state, thumbnail_bytes, created_at)"
    f" VALUES (?, ?, ?, ?, '{State.PENDING}', ?, ?)"
)
PHOTO_SELECT = f"SELECT {PHOTO_COLUMNS} FROM photos WHERE id = ?"
PENDING_SELECT = (
    f"SELECT {PHOTO_COLUMNS} FROM photos WHERE state = '{State.PENDING}' AND created_at <= ?"
    " ORDER BY id LIMIT ?"
)
PHOTO_STORE = (
    f"UPDATE photos SET state = '{State.DONE}', digest = ?, thumbnail = ?, error = NULL"
    f" WHERE id = ? AND state != '{State.DONE}' AND thumbnail_bytes = ?"
)
PHOTO_FAIL = (
    f"UPDATE photos SET state = '{State.FAILED}', error = ?"
    f" WHERE id = ? AND state = '{State.PENDING}'"
)
THUMBNAIL_SELECT = f"SELECT thumbnail, digest FROM photos WHERE id = ? AND state = '{State.DONE}'"


def photo_row(job: PhotoJob, created_at: float | None) -> tuple:
    created_at = time.time() if created_at is None else created_at
    return (job.image, job.width, job.height, job.thumb, job.thumbnail_bytes, created_at)


class DatabaseUnavailable(Exception):
    """The database could not answer now (no primary, nodes down); the web tier says 503."""


class UserStore(abc.ABC):
    """The database as the web tier sees it. Users are dicts as ``protocol.parse_user`` makes."""

    @abc.abstractmethod
    async def get(self, user_id: int) -> dict | None: ...

    @abc.abstractmethod
    async def create(self, user: dict) -> int:
        """Insert; return the new id."""

    @abc.abstractmethod
    async def replace(self, user_id: int, user: dict) -> bool:
        """Overwrite an existing user; False when there is none."""

    @abc.abstractmethod
    async def delete(self, user_id: int) -> bool: ...

    @abc.abstractmethod
    async def seed(self, count: int) -> int:
        """Make sure users 1..count exist as ``seed.seed_user`` describes; return rows written."""

    # -- photos (photos.py) --------------------------------------------------------------

    @abc.abstractmethod
    async def create_photo(self, job: PhotoJob, created_at: float | None = None) -> int:
        """Record a new photo as pending (created now, Unix time, unless given); its id."""

    @abc.abstractmethod
    async def get_photo(self, photo_id: int) -> Photo | None: ...

    @abc.abstractmethod
    async def pending_photos(self, created_before: float, limit: int) -> list[Photo]:
        """Up to ``limit`` photos still pending that were created at or before the time."""

    @abc.abstractmethod
    async def get_thumbnail(self, photo_id: int) -> tuple[bytes, str] | None:
        """The stored thumbnail and its digest; None while the photo is not done (or does
        not exist)."""

    @abc.abstractmethod
    async def store_thumbnail(self, photo_id: int, thumbnail: bytes, digest: str) -> StoreOutcome:
        """Store a worker's result; idempotent for the same bytes (see ``photos.py``)."""

    @abc.abstractmethod
    async def fail_photo(self, photo_id: int, error: str) -> Photo | None:
        """Mark a pending photo failed; return the photo as it is now (None: no such)."""

    @abc.abstractmethod
    async def close(self) -> None: ...


def _row(user: dict) -> tuple:
    address = user["address"]
    return (
        user["firstName"],
        user["lastName"],
        address["streetAddress"],
        address["city"],
        address["state"],
        address["postalCode"],
        orjson.dumps(user["phoneNumbers"]).decode(),
    )


class SqliteUserStore(UserStore):
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 path: str) -> None:  # fmt: skip
        self._db = writer
        self._reader = reader
        self.path = path

    @classmethod
    async def open(cls, path: str, synchronous: str = "full") -> SqliteUserStore:
        if synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {SYNCHRONOUS_MODES}")
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        writer = await aiosqlite.connect(path)
        reader = None
        try:
            # WAL is persistent in the file; asking again is a no-op after the first time.
            await writer.execute("PRAGMA journal_mode=WAL")
            await writer.execute(f"PRAGMA synchronous={synchronous.upper()}")
            await writer.executescript(_SCHEMA + PHOTOS_SCHEMA + ";")
            await writer.commit()
            reader = await aiosqlite.connect(path)
            await reader.execute("PRAGMA query_only=ON")  # a bug here cannot write
        except BaseException:
            await writer.close()
            if reader is not None:
                await reader.close()
            raise
        return cls(writer, reader, path)

    async def _read_one(self, sql: str, params: tuple) -> tuple | None:
        """The first row of a read, run to its end in one step of the reader's thread.

        A statement holds its snapshot until it is run to completion or reset, and every
        statement on the connection shares it meanwhile. Stepped a row at a time from
        the event loop (``execute``, then ``fetchone``), one request's read stays open
        while another's runs, so overlapping reads could keep one old snapshot alive
        and a write acknowledged since would not be seen. ``execute_fetchall`` finishes
        each read before the thread takes the next, so each sees every earlier commit.
        """
        rows = await self._reader.execute_fetchall(sql, params)
        return rows[0] if rows else None

    async def get(self, user_id: int) -> dict | None:
        row = await self._read_one(f"SELECT {_COLUMNS} FROM users WHERE id = ?", (user_id,))
        if row is None:
            return None
        first, last, street, city, state, postal, phones = row
        return {
            "firstName": first,
            "lastName": last,
            "address": {
                "streetAddress": street,
                "city": city,
                "state": state,
                "postalCode": postal,
            },
            "phoneNumbers": orjson.loads(phones),
        }

    async def create(self, user: dict) -> int:
        cursor = await self._db.execute(
            f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", _row(user)
        )
        await self._db.commit()
        return cursor.lastrowid  # type: ignore[return-value]

    async def replace(self, user_id: int, user: dict) -> bool:
        cursor = await self._db.execute(
            "UPDATE users SET first_name = ?, last_name = ?, street_address = ?, city = ?,"
            " state = ?, postal_code = ?, phone_numbers = ? WHERE id = ?",
            (*_row(user), user_id),
        )
        await self._db.commit()
        return cursor.rowcount > 0

    async def delete(self, user_id: int) -> bool:
        cursor = await self._db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        await self._db.commit()
        return cursor.rowcount > 0

    async def seed(self, count: int) -> int:
        if not 0 <= count <= MAX_SEED_USERS:
            raise ValueError(f"seed count must be 0..{MAX_SEED_USERS}")
        async with self._db.execute("SELECT value FROM meta WHERE key = 'seeded_users'") as cur:
            row = await cur.fetchone()
        done = row[0] if row else 0
        if count <= done:
            return 0
        written = 0
        # OR IGNORE: an id a client created before the seed range grew is kept, not clobbered.
        sql = f"INSERT OR IGNORE INTO users (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        for start in range(done + 1, count + 1, SEED_BATCH_ROWS):
            stop = min(start + SEED_BATCH_ROWS, count + 1)
            rows = [(uid, *_row(seed_user(uid))) for uid in range(start, stop)]
            cursor = await self._db.executemany(sql, rows)
            written += max(cursor.rowcount, 0)
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES ('seeded_users', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (count,),
        )
        await self._db.commit()
        return written

    async def count(self) -> int:
        row = await self._read_one("SELECT count(*) FROM users", ())
        return row[0] if row else 0

    async def create_photo(self, job: PhotoJob, created_at: float | None = None) -> int:
        cursor = await self._db.execute(PHOTO_INSERT, photo_row(job, created_at))
        await self._db.commit()
        return cursor.lastrowid  # type: ignore[return-value]

    async def get_photo(self, photo_id: int) -> Photo | None:
        row = await self._read_one(PHOTO_SELECT, (photo_id,))
        return None if row is None else photo_from_row(row)

    async def pending_photos(self, created_before: float, limit: int) -> list[Photo]:
        rows = await self._reader.execute_fetchall(PENDING_SELECT, (created_before, limit))
        return [photo_from_row(row) for row in rows]

    async def get_thumbnail(self, photo_id: int) -> tuple[bytes, str] | None:
        row = await self._read_one(THUMBNAIL_SELECT, (photo_id,))
        return None if row is None else (row[0], row[1])

    async def store_thumbnail(self, photo_id: int, thumbnail: bytes, digest: str) -> StoreOutcome:
        cursor = await self._db.execute(PHOTO_STORE, (digest, thumbnail, photo_id, len(thumbnail)))
        await self._db.commit()
        if cursor.rowcount > 0:
            return StoreOutcome.STORED
        return classify_store(await self.get_photo(photo_id), digest, len(thumbnail))

    async def fail_photo(self, photo_id: int, error: str) -> Photo | None:
        await self._db.execute(PHOTO_FAIL, (error, photo_id))
        await self._db.commit()
        return await self.get_photo(photo_id)

    async def close(self) -> None:
        # Closing the last connection checkpoints the WAL into the main file.
        await self._reader.close()
        await self._db.close()


def parse_db_spec(text: str) -> tuple[str, str]:
    """``sqlite:PATH`` into ``("sqlite", PATH)``; raises ValueError naming what is accepted."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme not in BACKENDS or not rest:
        raise ValueError(f"expected one of {', '.join(s + ':...' for s in BACKENDS)}, got {text!r}")
    if scheme in CHECKS:
        CHECKS[scheme](rest)
    return scheme, rest


async def open_store(spec: str, **options) -> UserStore:
    """Open the backend named by ``spec``; each backend takes the ``options`` it knows."""
    scheme, rest = parse_db_spec(spec)
    return await BACKENDS[scheme](rest, **options)


async def _open_sqlite(path: str, *, sqlite_synchronous: str = "full", **_other) -> UserStore:
    return await SqliteUserStore.open(path, sqlite_synchronous)


async def _open_store_tier(nodes: str, *, db_timeout_s: float = 5.0, **_other) -> UserStore:
    from .store_tier import StoreTierUserStore  # the store tier's client, only when used

    return await StoreTierUserStore.open(nodes, timeout_s=db_timeout_s)


def _check_store_tier(nodes: str) -> None:
    from .store_tier import parse_nodes

    parse_nodes(nodes)


#: scheme -> coroutine(rest_of_spec, **options) -> UserStore.
BACKENDS: dict[str, Callable[..., Awaitable[UserStore]]] = {
    "sqlite": _open_sqlite,
    "store": _open_store_tier,  # store_tier.py: the replicated store, HOST:PORT,...
}
#: scheme -> check of the rest of the spec (raises ValueError), for flag parsing.
CHECKS: dict[str, Callable[[str], None]] = {"store": _check_store_tier}
