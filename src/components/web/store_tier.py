"""``--db store:HOST:PORT[,HOST:PORT...]``: users and photos on the replicated store tier.

Stage 2 of the journey moves the database out of the web process onto its own box; stage
4 gives it replicas. This backend asks the same questions as the SQLite one
(``storage.UserStore``), asked over HTTP of the store (rqlite's API) through
``components.store.client.StoreClient``:

- writes go to the primary; the client finds it from the nodes' ``/status`` and finds
  it again after a failover (a node that is no longer primary refuses, the next call
  rediscovers);
- reads are spread round-robin over every node (``level=none``: a replica answers from
  its own copy), which is what makes read replicas add read capacity;
- read-your-writes: each write's LSN is reported to ``consistency.saw_write`` and each
  read carries the client's ``min_lsn`` (see ``consistency.py``), so a user always sees
  their own last write even when the read lands on a lagging replica.

A store that cannot answer (no primary during a failover, every node down, an outcome
unknown after a timeout) raises ``storage.DatabaseUnavailable``: the web tier answers
503 with ``Retry-After`` rather than 500, since the request may well succeed in a moment.

Photos use the same table and statements as the SQLite backend (``storage.PHOTOS_SCHEMA``,
``PHOTO_STORE``...). rqlite's JSON API has no byte parameters and answers a BLOB as
base64 text, so the thumbnail travels and is kept as base64 text in the ``thumbnail``
column (a third bigger; SQLite's column affinity allows it). Reads that decide a store's
outcome, and the thumbnail itself, are asked of the primary (``level=weak``): a worker
has no read-your-writes cookie, and a replica a moment behind must not turn a photo just
created into a 404. ``GET /photos/{id}`` reads like ``GET /users/{id}`` (any node, with the
user's cookie), so after a worker stored a result a lagging replica may show "pending" a
moment longer: the user's cookie carries the user's writes, not the worker's.

The schema and seeding match the SQLite backend exactly (same table, same ``meta`` row),
so the two are interchangeable. Seeding goes in batches of statements, one transaction
each, so several web servers starting at once against one store agree (``INSERT OR
IGNORE``; the ``meta`` upsert is the same value from each).
"""

from __future__ import annotations

import base64
import binascii

import orjson

from components.store.client import SqlError, StoreClient, StoreError
from components.worker.photo import PhotoJob

from .consistency import LAST_WRITE_LSN, saw_write
from .photos import Photo, StoreOutcome, classify_store, photo_from_row
from .seed import seed_user
from .storage import (
    _COLUMNS,
    MAX_SEED_USERS,
    PENDING_SELECT,
    PHOTO_FAIL,
    PHOTO_INSERT,
    PHOTO_SELECT,
    PHOTO_STORE,
    PHOTOS_SCHEMA,
    THUMBNAIL_SELECT,
    DatabaseUnavailable,
    UserStore,
    _row,
    photo_row,
)

#: Statements per seeding request (one transaction each): bounded request bodies.
SEED_BATCH_STATEMENTS = 500
DEFAULT_TIMEOUT_S = 5.0

SCHEMA = [
    "CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " first_name TEXT NOT NULL, last_name TEXT NOT NULL, street_address TEXT NOT NULL,"
    " city TEXT NOT NULL, state TEXT NOT NULL, postal_code TEXT NOT NULL,"
    " phone_numbers TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    PHOTOS_SCHEMA,
]
_SELECT = f"SELECT {_COLUMNS} FROM users WHERE id = ?"
_INSERT = f"INSERT INTO users ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
_UPDATE = (
    "UPDATE users SET first_name = ?, last_name = ?, street_address = ?, city = ?,"
    " state = ?, postal_code = ?, phone_numbers = ? WHERE id = ?"
)
_SEED = f"INSERT OR IGNORE INTO users (id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def parse_nodes(text: str) -> list[str]:
    """``HOST:PORT[,HOST:PORT...]`` into a list; ValueError naming the bad part."""
    nodes = [part.strip() for part in text.split(",")]
    for node in nodes:
        host, sep, port = node.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"store node must be HOST:PORT, got {node!r}")
    return nodes


def _user(values: list) -> dict:
    first, last, street, city, state, postal, phones = values
    return {
        "firstName": first,
        "lastName": last,
        "address": {"streetAddress": street, "city": city, "state": state, "postalCode": postal},
        "phoneNumbers": orjson.loads(phones),
    }


class StoreTierUserStore(UserStore):
    def __init__(self, client: StoreClient) -> None:
        self.client = client

    @classmethod
    async def open(cls, text: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> StoreTierUserStore:
        client = StoreClient(parse_nodes(text), timeout_s=timeout_s)
        store = cls(client)
        try:
            await store._write(SCHEMA)
        except BaseException:
            await client.close()
            raise
        return store

    async def _write(self, statements, *, transaction: bool = False) -> list[dict]:
        try:
            answer = await self.client.execute(statements, transaction=transaction)
            answer.raise_for_errors()
        except SqlError:
            raise
        except StoreError as exc:
            raise DatabaseUnavailable(str(exc)) from None
        saw_write(answer.lsn)
        return answer.results

    async def _read(self, statements, *, level: str = "none"):
        try:
            answer = await self.client.query(
                statements, level=level, min_lsn=LAST_WRITE_LSN.get() or None
            )
            return answer.raise_for_errors()
        except SqlError:
            raise
        except StoreError as exc:
            raise DatabaseUnavailable(str(exc)) from None

    async def get(self, user_id: int) -> dict | None:
        answer = await self._read([[_SELECT, user_id]])
        values = answer.results[0].get("values")
        return _user(values[0]) if values else None

    async def create(self, user: dict) -> int:
        results = await self._write([[_INSERT, *_row(user)]])
        return int(results[0]["last_insert_id"])

    async def replace(self, user_id: int, user: dict) -> bool:
        results = await self._write([[_UPDATE, *_row(user), user_id]])
        return results[0].get("rows_affected", 0) > 0

    async def delete(self, user_id: int) -> bool:
        results = await self._write([["DELETE FROM users WHERE id = ?", user_id]])
        return results[0].get("rows_affected", 0) > 0

    async def seed(self, count: int) -> int:
        if not 0 <= count <= MAX_SEED_USERS:
            raise ValueError(f"seed count must be 0..{MAX_SEED_USERS}")
        # On the primary: a replica may not have the meta row yet.
        answer = await self._read(["SELECT value FROM meta WHERE key = 'seeded_users'"],
                                  level="weak")  # fmt: skip
        values = answer.results[0].get("values")
        done = values[0][0] if values else 0
        if count <= done:
            return 0
        written = 0
        for start in range(done + 1, count + 1, SEED_BATCH_STATEMENTS):
            stop = min(start + SEED_BATCH_STATEMENTS, count + 1)
            batch = [[_SEED, uid, *_row(seed_user(uid))] for uid in range(start, stop)]
            results = await self._write(batch, transaction=True)
            written += sum(r.get("rows_affected", 0) for r in results)
        await self._write([[
            "INSERT INTO meta (key, value) VALUES ('seeded_users', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)", count,
        ]])  # fmt: skip
        return written

    async def count(self) -> int:
        answer = await self._read(["SELECT count(*) FROM users"], level="weak")
        return answer.results[0]["values"][0][0]

    async def create_photo(self, job: PhotoJob, created_at: float | None = None) -> int:
        results = await self._write([[PHOTO_INSERT, *photo_row(job, created_at)]])
        return int(results[0]["last_insert_id"])

    async def pending_photos(self, created_before: float, limit: int) -> list[Photo]:
        answer = await self._read([[PENDING_SELECT, created_before, limit]], level="weak")
        return [photo_from_row(row) for row in answer.results[0].get("values") or []]

    async def get_photo(self, photo_id: int, *, level: str = "none") -> Photo | None:
        values = (await self._read([[PHOTO_SELECT, photo_id]], level=level)).results[0]
        rows = values.get("values")
        return photo_from_row(rows[0]) if rows else None

    async def get_thumbnail(self, photo_id: int) -> tuple[bytes, str] | None:
        answer = await self._read([[THUMBNAIL_SELECT, photo_id]], level="weak")
        rows = answer.results[0].get("values")
        if not rows:
            return None
        encoded, digest = rows[0]
        try:
            return base64.b64decode(encoded, validate=True), digest
        except (binascii.Error, TypeError, ValueError):
            # Not what store_thumbnail wrote: someone edited the row behind our back.
            raise DatabaseUnavailable(f"photo {photo_id}: stored thumbnail is not base64") from None

    async def store_thumbnail(self, photo_id: int, thumbnail: bytes, digest: str) -> StoreOutcome:
        encoded = base64.b64encode(thumbnail).decode()
        results = await self._write([[PHOTO_STORE, digest, encoded, photo_id, len(thumbnail)]])
        if results[0].get("rows_affected", 0) > 0:
            return StoreOutcome.STORED
        photo = await self.get_photo(photo_id, level="weak")
        return classify_store(photo, digest, len(thumbnail))

    async def fail_photo(self, photo_id: int, error: str) -> Photo | None:
        await self._write([[PHOTO_FAIL, error, photo_id]])
        return await self.get_photo(photo_id, level="weak")

    async def close(self) -> None:
        await self.client.close()
