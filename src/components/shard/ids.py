"""Globally unique ids without coordination: Twitter's Snowflake layout.

Once a table is split over several databases, each database's AUTOINCREMENT counts on
its own and two shards hand out the same id. Snowflake (Twitter, 2010) makes ids that
never collide and still sort by creation time, with no round trip to anything:

    | 41 bits: milliseconds since EPOCH_MS | 10 bits: worker id | 12 bits: sequence |

Each router has its own worker id (``worker_id`` in the config; two routers must not
share one), so ids from different routers differ in those bits; within one router and
one millisecond the sequence counts up to 4096, after which the generator moves on to
the next millisecond. If the clock goes backwards (NTP stepping it), the generator keeps
using the last millisecond it issued rather than reuse old ids: time is taken as
``max(now, last)``. 41 bits of milliseconds last about 69 years from the epoch.

The clock is passed in (a function returning milliseconds), so tests drive it.
"""

from __future__ import annotations

from collections.abc import Callable

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1


class Snowflake:
    def __init__(self, worker_id: int, clock_ms: Callable[[], int]) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker id must be in 0..{MAX_WORKER}")
        self.worker_id = worker_id
        self._clock_ms = clock_ms
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        now = max(self._clock_ms() - EPOCH_MS, self._last_ms, 0)
        if now == self._last_ms:
            self._sequence += 1
            if self._sequence > MAX_SEQUENCE:  # 4096 ids this millisecond: borrow the next
                now += 1
                self._sequence = 0
        else:
            self._sequence = 0
        self._last_ms = now
        return (
            (now << (WORKER_BITS + SEQUENCE_BITS))
            | (self.worker_id << SEQUENCE_BITS)
            | (self._sequence)
        )

    @staticmethod
    def parts(value: int) -> tuple[int, int, int]:
        """(unix milliseconds, worker id, sequence) of an id."""
        return (
            (value >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS,
            (value >> SEQUENCE_BITS) & MAX_WORKER,
            value & MAX_SEQUENCE,
        )
