"""The waiting index: the queue of jobs not yet handed to a worker, kept in Redis sorted sets.

Redis only indexes what the database already holds; ``reconcile`` rebuilds it after a flush.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from scheduler import keys

# Atomically take up to ARGV[1] jobs from the head of the queue and mark them in flight.
_POP_SCRIPT = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), id)
end
return ids
"""

# Add jobs at the tail in the given order (one INCRBY for the whole group).
_PUSH_SCRIPT = """
local last = redis.call('INCRBY', KEYS[2], #ARGV)
local first = last - #ARGV + 1
for i, id in ipairs(ARGV) do
  redis.call('ZADD', KEYS[1], 'NX', first + i - 1, id)
end
return last
"""


@dataclass(frozen=True)
class IndexEntry:
    """What the index needs to order a job: its lane, tenant and priority (FCFS for now)."""

    job_id: str
    lane: str = "interactive"
    tenant_id: str = ""
    priority: int = 0


def now_ms() -> int:
    return int(time.time() * 1000)


class WaitingIndex:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._pop = client.register_script(_POP_SCRIPT)
        self._push = client.register_script(_PUSH_SCRIPT)

    def push(self, entries: Sequence[IndexEntry]) -> None:
        """Add jobs at the tail of the queue, in the given order."""
        for start in range(0, len(entries), 5000):
            chunk = [e.job_id for e in entries[start : start + 5000]]
            if chunk:
                self._push(keys=[keys.WAITING, keys.SEQ], args=chunk)
        self.wake()

    def remove(self, job_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.zrem(keys.WAITING, job_id)
        pipe.zrem(keys.PARKED, job_id)
        removed = pipe.execute()
        return bool(removed[0] or removed[1])

    def pop_for_dispatch(self, count: int) -> list[str]:
        if count <= 0:
            return []
        ids = self._pop(keys=[keys.WAITING, keys.INFLIGHT], args=[count, now_ms()])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def position(self, job_id: str) -> int | None:
        """0 = next to be dispatched; None when the job is not waiting."""
        rank = self.redis.zrank(keys.WAITING, job_id)
        return None if rank is None else int(rank)  # type: ignore[arg-type]

    def depth(self) -> int:
        return int(self.redis.zcard(keys.WAITING))

    def inflight_count(self) -> int:
        return int(self.redis.zcard(keys.INFLIGHT))

    def finished(self, job_id: str) -> None:
        """A worker is done with a dispatched job (terminal or parked): free its slot."""
        pipe = self.redis.pipeline()
        pipe.zrem(keys.INFLIGHT, job_id)
        pipe.lpush(keys.DISPATCH_WAKE, "1")
        pipe.ltrim(keys.DISPATCH_WAKE, 0, 0)
        pipe.execute()

    def wake(self) -> None:
        pipe = self.redis.pipeline()
        pipe.lpush(keys.DISPATCH_WAKE, "1")
        pipe.ltrim(keys.DISPATCH_WAKE, 0, 0)
        pipe.execute()

    def wait_for_wake(self, timeout_s: float) -> None:
        self.redis.blpop([keys.DISPATCH_WAKE], timeout=timeout_s)

    def indexed(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these job ids are in any index (waiting, in flight or parked)."""
        ids = list(job_ids)
        if not ids:
            return set()
        pipe = self.redis.pipeline()
        for key in (keys.WAITING, keys.INFLIGHT, keys.PARKED):
            pipe.zmscore(key, ids)
        found: set[str] = set()
        for scores in pipe.execute():
            found.update(i for i, s in zip(ids, scores, strict=True) if s is not None)
        return found
