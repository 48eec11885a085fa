"""Static assets with validators, so browsers and the CDN edge can cache and revalidate.

``GET /static/<path>`` answers with three headers that make an asset cacheable:

- ``Cache-Control: public, max-age=N`` (RFC 9111 §5.2.2): any cache, including a shared
  one like the edge, may reuse the response for N seconds without asking;
- ``ETag`` (RFC 9110 §8.8.3): a *strong* validator derived from the content (BLAKE2b of
  the bytes), so two web servers holding the same file give the same tag, whatever the
  files' modification times;
- ``Last-Modified`` (RFC 9110 §8.8.2): the file's mtime as an HTTP-date.

After ``max-age`` a cache revalidates with ``If-None-Match`` (the tags it holds) or
``If-Modified-Since``; when nothing changed we answer ``304 Not Modified`` with the
validators and no body (RFC 9110 §15.4.5). The precedence of RFC 9110 §13.2.2 applies:
when ``If-None-Match`` is present, ``If-Modified-Since`` is ignored; ``If-None-Match``
uses the weak comparison (§8.8.3.2); an unparseable date is ignored (§13.1.3).

Paths are confined to the static root: a path with a ``..`` segment, a backslash, a NUL
or an absolute form is refused, and the resolved file (after symlinks) must still sit
under the root. Files are read once and kept in a byte-bounded LRU, revalidated by a
``stat`` on every request (size, mtime and inode), so an edited file is served fresh at
once. Files larger than ``MAX_FILE_BYTES`` are not served: this tier ships small assets;
bulk content belongs on the edge.
"""

from __future__ import annotations

import email.utils
import hashlib
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path

from .lru import LruCache

MAX_FILE_BYTES = 8 * 1024 * 1024
DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
MAX_PATH_CHARS = 1024
DEFAULT_ROOT = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True, slots=True)
class Asset:
    content: bytes
    etag: str
    last_modified: str  # HTTP-date
    mtime_s: int  # whole seconds: HTTP-dates have no finer resolution
    content_type: str
    identity: tuple[int, int, int]  # (size, mtime_ns, inode): what revalidation compares


def entity_tag(content: bytes) -> str:
    """A strong ETag for ``content``: 16 bytes of BLAKE2b, hex, quoted (RFC 9110 §8.8.3)."""
    return '"' + hashlib.blake2b(content, digest_size=16).hexdigest() + '"'


def http_date(timestamp_s: float) -> str:
    """IMF-fixdate, the preferred HTTP-date format (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(timestamp_s, usegmt=True)


def parse_http_date(text: str) -> float | None:
    """An HTTP-date as a Unix timestamp, or None when it does not parse (then it is ignored)."""
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison of ``etag`` against an If-None-Match list (RFC 9110 §13.1.2)."""
    if if_none_match.strip() == "*":
        return True
    mine = _opaque(etag)
    return any(_opaque(candidate) == mine for candidate in if_none_match.split(","))


def is_not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, mtime_s: int
) -> bool:
    """Whether a GET/HEAD with these headers gets 304 (RFC 9110 §13.2.2, steps 3 and 4)."""
    if if_none_match is not None:
        return etag_matches(if_none_match, etag)
    if if_modified_since is not None:
        since = parse_http_date(if_modified_since)
        return since is not None and mtime_s <= since
    return False


def safe_relative(path: str) -> str | None:
    """``path`` if it is a plain relative path inside the root, else None."""
    if not path or len(path) > MAX_PATH_CHARS or "\x00" in path or "\\" in path:
        return None
    if path.startswith("/"):
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    return path


class StaticFiles:
    """Files under ``root``, with validators, cached in memory and revalidated by ``stat``."""

    def __init__(
        self, root: Path | str = DEFAULT_ROOT, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.root = Path(root).resolve()
        self._cache = LruCache(cache_bytes)

    def lookup(self, path: str) -> Asset | None:
        """The asset at ``path`` (relative to the root), or None: missing, outside, too big.

        Runs on the event loop: one ``stat`` per request, and a read only when the file is
        new or changed. That is fine for small assets; large files would need a thread.
        """
        relative = safe_relative(path)
        if relative is None:
            return None
        candidate = self.root / relative
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.root):
            return None
        try:
            info = os.stat(resolved)
        except OSError:
            return None
        if not os.path.isfile(resolved) or info.st_size > MAX_FILE_BYTES:
            return None
        identity = (info.st_size, info.st_mtime_ns, info.st_ino)
        cached = self._cache.get(relative, 0.0)
        if cached is not None and cached.identity == identity:
            return cached
        try:
            with open(resolved, "rb") as fh:
                content = fh.read(MAX_FILE_BYTES + 1)
        except OSError:
            return None
        if len(content) > MAX_FILE_BYTES:
            return None
        content_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
        mtime_s = int(info.st_mtime)
        asset = Asset(content, entity_tag(content), http_date(mtime_s), mtime_s, content_type,
                      identity)  # fmt: skip
        self._cache.set(relative, asset, 0.0, None, size=len(content))
        return asset
