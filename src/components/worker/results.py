"""Where a worker puts a job's result: through the web tier, or into a directory.

The queue's promise is *at least once*: a job is deleted only after its result is
stored, so a worker that dies in between leaves the job to be processed again, and the
store must take the same result twice without harm. Two sinks keep that promise:

- ``WebResults`` (``--web URL``), the chapter's design: the worker stores the thumbnail
  through the web tier's storage with ``PUT /photos/{id}/thumbnail``, which is
  idempotent (``components.web.photos``). A connection error, a timeout or a 5xx is
  retried a few times with doubling pauses (the web tier may be restarting, or shedding
  load with 503); if it still fails the job fails, and the worker releases it with the
  queue's backoff (``retry.py``), so a long outage costs delayed jobs, not lost ones. A
  4xx is the web tier saying *this* result is wrong (no such photo, wrong size, a
  different result already stored): retrying the PUT cannot help, the job fails and is
  buried after ``--max-failures`` (an outage never buries: ``retry.py``). When a
  job is finally buried the worker tells the web tier (``POST /photos/{id}/failure``), so
  the photo shows ``failed`` instead of ``pending`` forever; that call is best effort.
- ``DirectoryResults`` (``--result-dir DIR``): ``<image>.rgb`` and ``<image>.json``
  written under a temporary name and renamed, so a reader never sees half a file, and a
  second run of the same job replaces them with the same bytes.

Answers are read with a bound (``MAX_ANSWER_BYTES``): the web tier's are small JSON.
"""

from __future__ import annotations

import asyncio
import os

import aiohttp
import orjson

from components.common.backoff import Backoff

from .photo import Result

STORE_RETRY_FIRST_S = 0.1
STORE_RETRY_MAX_S = 2.0
MAX_ANSWER_BYTES = 64 * 1024
#: 4xx answers that mean "not now" rather than "never" (RFC 9110 §15.5.9, RFC 6585 §4).
TRANSIENT_4XX = frozenset({408, 429})


class StoreRejected(Exception):
    """The web tier refused this result (a 4xx): retrying the same PUT cannot help."""


class StoreUnavailable(Exception):
    """The result could not be stored now (connection errors, timeouts, 5xx)."""


class DirectoryResults:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    async def store(self, result: Result) -> None:
        """Write ``<image>.json`` and ``<image>.rgb`` atomically (temp name + rename)."""
        base = os.path.join(self.directory, result.image.replace("/", "__"))
        meta = orjson.dumps({"image": result.image, "digest": result.digest,
                             "bytes": len(result.thumbnail)})  # fmt: skip
        for path, data in ((base + ".rgb", result.thumbnail), (base + ".json", meta)):
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)

    async def failed(self, photo_id: int | None, error: str) -> None:
        """A directory has nobody to tell."""

    async def close(self) -> None:
        pass


class WebResults:
    def __init__(self, base_url: str, *, timeout_s: float, attempts: int, connections: int,
                 token: str | None = None) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        # The web tier's --worker-token: the store routes are for workers only.
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            connector=aiohttp.TCPConnector(limit=connections),
            headers=headers,
        )

    async def store(self, result: Result) -> None:
        if result.photo is None:
            raise StoreRejected("job has no photo id: the web tier has nowhere to store it")
        url = f"{self.base_url}/photos/{result.photo}/thumbnail"
        headers = {"Content-Type": "application/octet-stream"}
        pauses = Backoff(STORE_RETRY_FIRST_S, STORE_RETRY_MAX_S)
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.session.put(url, data=result.thumbnail, headers=headers) as answer:
                    body = await answer.content.read(MAX_ANSWER_BYTES)
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"PUT {url}: {exc!r}"
            else:
                if status == 200:
                    self._check_digest(body, result)
                    return
                error = f"PUT {url}: {status} {body[:200].decode('utf-8', 'replace')}"
                if 400 <= status < 500 and status not in TRANSIENT_4XX:
                    raise StoreRejected(error)
            if attempt < self.attempts:
                await asyncio.sleep(pauses.next())
        raise StoreUnavailable(f"not stored after {self.attempts} attempts: {error}")

    @staticmethod
    def _check_digest(body: bytes, result: Result) -> None:
        # The web tier digests what it received; a different digest means the bytes were
        # damaged on the way, which no retry of the job can be sure to fix.
        try:
            digest = orjson.loads(body).get("digest")
        except (orjson.JSONDecodeError, AttributeError):
            digest = None
        if digest != result.digest:
            raise StoreRejected(f"web tier stored digest {digest!r}, expected {result.digest}")

    async def failed(self, photo_id: int | None, error: str) -> None:
        """Tell the web tier a photo's job was buried (one attempt; raises on failure)."""
        if photo_id is None:
            return
        url = f"{self.base_url}/photos/{photo_id}/failure"
        async with self.session.post(url, json={"error": error}) as answer:
            await answer.content.read(MAX_ANSWER_BYTES)
            if answer.status != 200:
                raise StoreRejected(f"POST {url}: {answer.status}")

    async def close(self) -> None:
        await self.session.close()
