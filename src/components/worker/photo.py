"""The job itself: decode a photo job, make a thumbnail-sized derivative and its digest.

A job body is JSON naming an image and its size::

    {"image": "user-42/beach.jpg", "width": 1024, "height": 768, "thumb": 64}

There is no image library in the dependencies, and the story is about queueing, not
codecs, so the source pixels are synthesised deterministically from the image name (the
same name always gives the same pixels, as a stored file would). The derivative is a
real nearest-neighbour downscale to ``thumb`` x ``thumb`` RGB pixels, and the result is
its SHA-256 digest: work proportional to the image, deterministic, and checkable.

Bad input is refused with ``BadJob`` (the worker retries, then buries it): not JSON,
missing or out-of-range fields, an image name that is not a safe file name, or
``"fail": true`` (a job that always fails, used to exercise retries and burying).
Sizes are bounded (``MAX_SIDE_PIXELS``) so a job cannot make a worker allocate
unbounded memory.
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
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


class BadJob(Exception):
    """The job cannot be processed as given."""


@dataclass(frozen=True, slots=True)
class PhotoJob:
    image: str
    width: int
    height: int
    thumb: int


@dataclass(frozen=True, slots=True)
class Result:
    image: str
    digest: str
    thumbnail: bytes


def parse_job(body: bytes) -> PhotoJob:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadJob(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadJob("job must be a JSON object")
    if doc.get("fail"):
        raise BadJob("job asks to fail")
    image = doc.get("image")
    if not isinstance(image, str) or not _SAFE_NAME.match(image) or ".." in image:
        raise BadJob(f"bad image name {image!r}")
    width, height = doc.get("width", 640), doc.get("height", 480)
    thumb = doc.get("thumb", DEFAULT_THUMB_PIXELS)
    for name, value, top in (("width", width, MAX_SIDE_PIXELS), ("height", height, MAX_SIDE_PIXELS),
                             ("thumb", thumb, MAX_THUMB_PIXELS)):  # fmt: skip
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise BadJob(f"{name} must be an integer in 1..{top}")
    return PhotoJob(image, width, height, thumb)


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
    return Result(job.image, hashlib.sha256(thumb).hexdigest(), thumb)
