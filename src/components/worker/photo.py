"""The job itself: decode a photo job, make a thumbnail-sized derivative and its digest.

A job body is JSON naming an image and its size::

    {"image": "user-42/beach.jpg", "width": 1024, "height": 768, "thumb": 64}

A job the web tier publishes (``POST /photos``) also carries ``"photo": ID``, the photo's
row in the web tier's storage, which is where a worker started with ``--web`` stores the
result. The web tier validates a new photo with ``job_from_doc`` and encodes the job with
``encode_job``, so the producer and the consumer share one definition of a valid job
(the web tier imports this module, as it imports the store's client: the job format
belongs to the consumer that must be able to process it).

There is no image library in the dependencies, and the story is about queueing, not
codecs, so the source pixels are synthesised deterministically from the image name (the
same name always gives the same pixels, as a stored file would). The derivative is a
real nearest-neighbour downscale to ``thumb`` x ``thumb`` RGB pixels, and the result is
its SHA-256 digest: work proportional to the image, deterministic, and checkable.

Bad input is refused with ``BadJob`` (the worker retries, then buries it): not JSON,
missing or out-of-range fields, an image name that is not a safe file name, or
``"fail": true`` (a job that always fails, used to exercise retries and burying; it is a
valid job to publish, it only fails when processed). Sizes are bounded
(``MAX_SIDE_PIXELS``, ``MAX_THUMB_PIXELS``) so a job cannot make a worker allocate
unbounded memory, and a thumbnail is at most ``MAX_THUMBNAIL_BYTES``.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

import orjson

MAX_SIDE_PIXELS = 4096
MAX_THUMB_PIXELS = 512
DEFAULT_THUMB_PIXELS = 64
#: RGB bytes of the largest thumbnail: what a result store must be ready to take.
MAX_THUMBNAIL_BYTES = MAX_THUMB_PIXELS * MAX_THUMB_PIXELS * 3
#: Largest photo id in a job: SQLite's INTEGER is a signed 64-bit value.
MAX_PHOTO_ID = (1 << 63) - 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


class BadJob(Exception):
    """The job cannot be processed as given."""


@dataclass(frozen=True, slots=True)
class PhotoJob:
    image: str
    width: int
    height: int
    thumb: int
    photo: int | None = None  # the web tier's photo id, when it published the job
    fail: bool = False

    @property
    def thumbnail_bytes(self) -> int:
        """Size of this job's thumbnail: ``thumbnail`` never upscales."""
        return min(self.thumb, self.width) * min(self.thumb, self.height) * 3


@dataclass(frozen=True, slots=True)
class Result:
    image: str
    digest: str
    thumbnail: bytes
    photo: int | None = None  # where the web tier wants it stored (``PhotoJob.photo``)


def parse_job(body: bytes) -> PhotoJob:
    """A job body as the worker receives it; ``"fail": true`` is refused here."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJob(f"not JSON: {exc}") from None
    job = job_from_doc(doc)
    if job.fail:
        raise BadJob("job asks to fail")
    return job


def job_from_doc(doc: object) -> PhotoJob:
    """Validate a decoded job document (also the web tier's ``POST /photos`` body)."""
    if not isinstance(doc, dict):
        raise BadJob("job must be a JSON object")
    image = doc.get("image")
    if not isinstance(image, str) or not _SAFE_NAME.match(image) or ".." in image:
        raise BadJob(f"bad image name {image!r}"[:240])
    width, height = doc.get("width", 640), doc.get("height", 480)
    thumb = doc.get("thumb", DEFAULT_THUMB_PIXELS)
    for name, value, top in (("width", width, MAX_SIDE_PIXELS), ("height", height, MAX_SIDE_PIXELS),
                             ("thumb", thumb, MAX_THUMB_PIXELS)):  # fmt: skip
        if not _int_in(value, 1, top):
            raise BadJob(f"{name} must be an integer in 1..{top}")
    photo = doc.get("photo")
    if photo is not None and not _int_in(photo, 1, MAX_PHOTO_ID):
        raise BadJob(f"photo must be an integer in 1..{MAX_PHOTO_ID}")
    return PhotoJob(image, width, height, thumb, photo, bool(doc.get("fail")))


def _int_in(value: object, low: int, high: int) -> bool:
    # bool is an int subclass; true is not a size.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def encode_job(job: PhotoJob) -> bytes:
    """The job body a producer puts on the queue; ``parse_job`` reads it back."""
    doc: dict = {"image": job.image, "width": job.width, "height": job.height,
                 "thumb": job.thumb}  # fmt: skip
    if job.photo is not None:
        doc["photo"] = job.photo
    if job.fail:
        doc["fail"] = True
    return orjson.dumps(doc)


def source_pixels(job: PhotoJob) -> bytes:
    """The image's RGB pixels, row-major: deterministic in its name and size."""
    seed = int.from_bytes(hashlib.sha256(job.image.encode()).digest()[:8], "big")
    return random.Random(seed).randbytes(job.width * job.height * 3)


def thumbnail(pixels: bytes, width: int, height: int, size: int) -> bytes:
    """Nearest-neighbour downscale of RGB ``pixels`` to at most ``size`` x ``size``."""
    out_w, out_h = min(size, width), min(size, height)
    columns = [(x * width // out_w) * 3 for x in range(out_w)]
    rows = []
    for y in range(out_h):
        start = (y * height // out_h) * width * 3
        row = pixels[start : start + width * 3]
        rows.append(b"".join(row[c : c + 3] for c in columns))
    return b"".join(rows)


def process(body: bytes) -> Result:
    job = parse_job(body)
    thumb = thumbnail(source_pixels(job), job.width, job.height, job.thumb)
    return Result(job.image, hashlib.sha256(thumb).hexdigest(), thumb, job.photo)


def photo_id_of(body: bytes) -> int | None:
    """The web tier's photo id in a job body, even in one that fails; None if unreadable."""
    try:
        return job_from_doc(orjson.loads(body)).photo
    except (orjson.JSONDecodeError, BadJob):
        return None
