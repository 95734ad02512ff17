"""What a process's listeners of one job share: its recent events and one wake-up.

Both backends' feeds fan out the same way (one registration per stream, one wake-up per
batch of events): the embedded one (:mod:`.sqlite.listeners`) publishes what its process
appended, the Redis one (:mod:`.redis.fanout`) what its reader got from the stream. This
is the part they have in common.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..models import Event

MEMORY = 512  # recent events kept in memory per watched job


class Watch:
    """One job that listeners in this process follow.

    What the watch has is one immutable ``state`` (replaced, never changed), published
    before ``arrived`` is set; listeners read both without the lock, so waking 1,000 of
    them costs 1,000 attribute reads, not 1,000 turns of a lock. ``arrived`` is replaced
    at each wake-up: waking every listener is one ``set()``.
    """

    __slots__ = ("state", "arrived", "listeners")

    def __init__(self, cursor: int, recent: Sequence[Event] = ()) -> None:
        """``cursor``: the id of the newest event there is; ``recent``: events up to it."""
        self.state: tuple[int, tuple[Event, ...]] = (cursor, tuple(recent))
        self.arrived = threading.Event()
        self.listeners = 0

    @property
    def cursor(self) -> int:
        """The id of the newest event the watch has."""
        return self.state[0]

    def publish(self, events: list[Event]) -> None:
        """Add events (contiguous, right after the cursor), then wake listeners."""
        memory = (self.state[1] + tuple(events))[-MEMORY:]
        self.state = (memory[-1].id, memory)
        self.wake()

    def wake(self) -> None:
        """Wake whoever waits now; later waits get a new Event."""
        arrived, self.arrived = self.arrived, threading.Event()
        arrived.set()

    def since(self, after: int) -> list[Event] | None:
        """Events after ``after`` from memory; None when memory does not reach back."""
        cursor, memory = self.state  # one read: a consistent pair
        if cursor <= after:
            return []
        if not memory or memory[0].id > after + 1:
            return None
        return list(memory[after + 1 - memory[0].id :])  # ids in memory are contiguous


def leave(lock: threading.Lock, watches: dict[str, Watch], job_id: str, watch: Watch) -> None:
    """One listener of ``watch`` is done; the last one takes the watch away (the next
    listener of the job starts a new one)."""
    with lock:
        watch.listeners -= 1
        if watch.listeners == 0 and watches.get(job_id) is watch:
            del watches[job_id]
