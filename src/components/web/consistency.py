"""Read-your-writes across replicas: the log position a client has seen, carried per request.

With a replicated database, a read spread to a replica may be answered before that
replica has applied the write the same user just made: the user saves a profile, reloads
and sees the old one. The store numbers every write (its LSN) and accepts ``min_lsn`` on
a read: "answer only once you have applied at least this". So the web tier remembers,
*per client*, the LSN of that client's last write and sends it with that client's reads.

Where the position lives: in a cookie (``scalelab_lsn``), so it follows the user to any
web server behind the load balancer, with no shared session state. It is request
context, not a parameter of ``UserStore.get``: the middleware reads the cookie into the
``LAST_WRITE_LSN`` context variable before the handler runs, a store backend reads it on
each query and raises it after each write, and the middleware sets the cookie again when
it rose. Other users' reads carry nothing and may be slightly stale (that is what
replicas buy: reads that do not wait).

The cookie expires after ``COOKIE_MAX_AGE_S``: by then every replica that is up has long
applied the write, and an old position must not outlive a failover that lost the writes
after it (asynchronous replication), where it would make reads wait for an LSN the new
primary reaches only later.
"""

from __future__ import annotations

from contextvars import ContextVar

COOKIE_NAME = "scalelab_lsn"
COOKIE_MAX_AGE_S = 30
#: Longest decimal LSN accepted from a cookie (anything longer is ignored, not parsed).
MAX_DIGITS = 19

#: The LSN of this request's client's last write, 0 when unknown.
LAST_WRITE_LSN: ContextVar[int] = ContextVar("last_write_lsn", default=0)


def parse_position(text: str | None) -> int:
    """The cookie's value as an LSN; anything that is not a small decimal number is 0."""
    if not text or len(text) > MAX_DIGITS or not (text.isascii() and text.isdigit()):
        return 0
    return int(text)


def saw_write(lsn: int | None) -> None:
    """A backend reports the LSN of a write made for this request's client."""
    if lsn and lsn > LAST_WRITE_LSN.get():
        LAST_WRITE_LSN.set(lsn)
