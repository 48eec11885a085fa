"""The write audit: which acknowledged writes survived a run, and who saw them late.

The replication stage claims that "with semi-sync, a kill -9 of the primary loses no
acknowledged write". The load generator cannot check that: it counts answers, not what
the database kept. So a run with a scenario also runs this auditor, a single user that,
next to the load, keeps creating users through the front door, one at a time, each
with a unique name, and remembers every creation that was *acknowledged* (201 with an
id). When the load is over it reads each one back and counts:

- **acknowledged** and **found** (the same document back): the difference is the
  number of acknowledged writes that were lost;
- **failed** writes (an error or no answer): not acknowledged, so losing them breaks no
  promise, but they show how long writes were unavailable;
- **stale reads**: right after each acknowledged write, the auditor reads the user
  back twice: once *without* its read-your-writes cookie, as another user would (a 404
  there means the read reached a replica that had not applied the write yet: replication
  lag made visible), and once *with* it (``consistency.py``: that read must wait for the
  write, so a stale answer there is a bug, counted separately).

It is one sequential client at a bounded rate (``interval_s``), so it adds little
load, and bounded in count (``MAX_WRITES``).
"""

from __future__ import annotations

import http.cookiejar
import threading
import time
import urllib.error
import urllib.request

import orjson

INTERVAL_S = 0.05
MAX_WRITES = 5000
TIMEOUT_S = 5.0


class WriteAuditor(threading.Thread):
    def __init__(self, entry_url: str, interval_s: float = INTERVAL_S, tag: str = "audit"):
        super().__init__(name="write-audit", daemon=True)
        self.url = entry_url.rstrip("/")
        self.interval_s = interval_s
        self.tag = f"{tag}{int(time.time())}"
        self.acked: dict[int, str] = {}  # id -> the unique last name written
        self.failed = 0
        self.stale_without_cookie = 0
        self.stale_with_cookie = 0
        self.checked_reads = 0
        self._halt = threading.Event()
        self._jar = http.cookiejar.CookieJar()
        self._with_cookie = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self._jar)
        )
        self._without_cookie = urllib.request.build_opener()

    def run(self) -> None:
        n = 0
        while not self._halt.is_set() and n < MAX_WRITES:
            n += 1
            name = f"{self.tag}-{n}"
            user_id = self._create(name)
            if user_id is None:
                self.failed += 1
            else:
                self.acked[user_id] = name
                self.checked_reads += 1
                if self._read(self._without_cookie, user_id) != name:
                    self.stale_without_cookie += 1
                if self._read(self._with_cookie, user_id) != name:
                    self.stale_with_cookie += 1
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()

    def _create(self, name: str) -> int | None:
        body = orjson.dumps({
            "firstName": "Audit", "lastName": name, "phoneNumbers": [],
            "address": {"streetAddress": "1 Log St", "city": "Replay", "state": "RP",
                        "postalCode": "00000"},
        })  # fmt: skip
        request = urllib.request.Request(self.url + "/users", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        try:
            with self._with_cookie.open(request, timeout=TIMEOUT_S) as response:
                if response.status != 201:
                    return None
                return int(orjson.loads(response.read())["id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # urllib's HTTPError (4xx/5xx) is an OSError too

    def _read(self, opener, user_id: int) -> str | None:
        try:
            with opener.open(f"{self.url}/users/{user_id}", timeout=TIMEOUT_S) as response:
                return orjson.loads(response.read()).get("lastName")
        except (OSError, ValueError, AttributeError):
            return None

    def verify(self) -> dict:
        """Read every acknowledged write back (after the run) and return the figures."""
        found = sum(1 for uid, name in self.acked.items()
                    if self._read(self._with_cookie, uid) == name)  # fmt: skip
        return {
            "acknowledged": len(self.acked),
            "found": found,
            "lost": len(self.acked) - found,
            "failed": self.failed,
            "reads_checked": self.checked_reads,
            "stale_reads_without_cookie": self.stale_without_cookie,
            "stale_reads_with_cookie": self.stale_with_cookie,
        }


def format_audit(figures: dict) -> str:
    return (f"write audit: {figures['acknowledged']} acknowledged, {figures['found']} found "
            f"({figures['lost']} lost), {figures['failed']} failed; stale reads "
            f"{figures['stale_reads_without_cookie']}/{figures['reads_checked']} without the "
            f"read-your-writes cookie, {figures['stale_reads_with_cookie']} with it")  # fmt: skip
