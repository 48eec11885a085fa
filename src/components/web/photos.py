"""Photos: the web tier's half of the photo pipeline, as data and rules (no I/O).

The chapter's message-queue stage moves slow work out of the request: ``POST /photos``
records the photo as *pending*, publishes a job and answers 202 at once; a worker
reserves the job, makes the thumbnail and stores it back through the web tier
(``PUT /photos/{id}/thumbnail``), which makes the photo *done*. The queue delivers a job
*at least once* (a worker killed after storing but before ``delete`` leaves the job to be
processed again), so storing must be idempotent: the same bytes stored twice are one
result. The states and what moves between them, as a table::

    pending --thumbnail stored--> done      (the normal path)
    pending --worker gave up----> failed    (job buried; or the job never got queued)
    failed  --thumbnail stored--> done      (an operator kicked the buried job)
    done    --same bytes--------> done      (a redelivered job: "unchanged", still 200)
    done    --other bytes-------> conflict  (409: processing is deterministic, so this
                                             is a bug or a forged result, not a retry)

The store itself is one conditional ``UPDATE`` (``WHERE state != 'done' AND size``) in
both storage backends, so two workers racing on the same photo cannot both "win"; when
it changes no row, ``classify_store`` reads the row to say why. The thumbnail size is
known from the job (``PhotoJob.thumbnail_bytes``) and kept in the row, so a body of any
other size is refused before it is stored, and no body exceeds
``photo.MAX_THUMBNAIL_BYTES`` (768 KiB).

Idempotent storing also makes *re-publishing* safe: a photo still pending long after it
was created (its job lost by a queue run without ``-b``, or a web process that died
between recording the photo and publishing the job) can simply be published again
(``POST /admin/photos-republish``); if the first job was only slow, the photo is
processed twice and stored once. What is not re-published is the test hook
``"fail": true``, which is not stored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from components.worker.photo import PhotoJob


class State(enum.StrEnum):
    """A photo's state, as stored and as ``GET /photos/{id}`` shows it."""

    PENDING = "pending"  #: recorded and published; no result yet
    DONE = "done"  #: the thumbnail is stored; ``digest`` is its SHA-256
    FAILED = "failed"  #: a worker gave up (``error`` says why), or the job never got queued


class StoreOutcome(enum.StrEnum):
    """What ``PUT /photos/{id}/thumbnail`` did; the server maps each to one status."""

    STORED = "stored"  #: 200: the photo is done now
    UNCHANGED = "unchanged"  #: 200: it was done with these very bytes (a redelivery)
    CONFLICT = "conflict"  #: 409: it was done with other bytes
    WRONG_SIZE = "wrong_size"  #: 400: the body is not the job's thumbnail size
    MISSING = "missing"  #: 404: no such photo


@dataclass(frozen=True, slots=True)
class Photo:
    id: int
    image: str
    width: int
    height: int
    thumb: int
    state: State
    digest: str | None = None
    error: str | None = None

    @property
    def job(self) -> PhotoJob:
        """The job to publish for this photo (again, when it is stuck pending)."""
        return PhotoJob(self.image, self.width, self.height, self.thumb, self.id)

    @property
    def thumbnail_bytes(self) -> int:
        return self.job.thumbnail_bytes


#: Columns of a photo row, in ``Photo``'s order (without the thumbnail itself).
PHOTO_COLUMNS = "id, image, width, height, thumb, state, digest, error"
#: Longest failure reason kept: a worker's error text is bounded before it is stored.
MAX_ERROR_CHARS = 500


def photo_from_row(row) -> Photo:
    photo_id, image, width, height, thumb, state, digest, error = row
    return Photo(photo_id, image, width, height, thumb, State(state), digest, error)


def photo_location(photo_id: int) -> str:
    return f"/photos/{photo_id}"


def photo_document(photo: Photo) -> dict:
    """``GET /photos/{id}``: the job, its state and, once done, the result."""
    doc: dict = {"id": photo.id, "image": photo.image, "width": photo.width,
                 "height": photo.height, "thumb": photo.thumb, "state": str(photo.state)}  # fmt: skip
    if photo.state is State.DONE:
        doc["digest"] = photo.digest
        doc["thumbnail"] = photo_location(photo.id) + "/thumbnail"
        doc["thumbnailBytes"] = photo.thumbnail_bytes
    elif photo.state is State.FAILED:
        doc["error"] = photo.error
    return doc


def classify_store(photo: Photo | None, digest: str, size: int) -> StoreOutcome:
    """Why the conditional store changed no row (or, with a fresh row, whether it may).

    ``photo`` is the row read after the ``UPDATE`` matched nothing.
    """
    if photo is None:
        return StoreOutcome.MISSING
    if size != photo.thumbnail_bytes:
        return StoreOutcome.WRONG_SIZE
    if photo.state is State.DONE:
        return StoreOutcome.UNCHANGED if photo.digest == digest else StoreOutcome.CONFLICT
    # Not done and the right size, yet the UPDATE matched nothing: it was stored and then
    # (impossible by the table above) un-done. Report it as a conflict rather than guess.
    return StoreOutcome.CONFLICT


def bounded_error(text: object) -> str:
    return str(text)[:MAX_ERROR_CHARS]
