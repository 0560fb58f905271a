"""The waiting index: the queue of jobs not yet handed to a worker, kept in Redis sorted sets.

One sorted set per (lane, priority) class; the queue is those classes read in ``keys.CLASS_KEYS``
order — interactive before bulk, higher priority first, arrival order inside a class, and in the
bulk lane tenants take turns. Dispatch pops in exactly that order, so a published position is the
number of jobs that will really be handed out first. Redis only indexes what the database holds;
``scheduler.queue.reconcile`` rebuilds it after a flush.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from imagequeue import keys
from imagequeue.lua import lua_source

_CLASS_COUNT = len(keys.CLASS_KEYS)
_CLASS_INDEX = {(lane, p): keys.CLASS_KEYS.index(keys.waiting(lane, p)) + 1
                for lane in keys.LANES for p in keys.PRIORITIES}
DEFAULT_LEASE_MS = 10_000
DEFAULT_SCAN_LIMIT = 5000



@dataclass(frozen=True)
class IndexEntry:
    """What the index needs to order a job: its lane, tenant and priority."""

    job_id: str
    lane: str = "interactive"
    tenant_id: str = ""
    priority: int = 0

    @property
    def class_index(self) -> int:
        """1-based position of this job's class in ``keys.CLASS_KEYS``."""
        return class_index(self.lane, self.priority)


def class_index(lane: str, priority: int) -> int:
    """1-based position in ``keys.CLASS_KEYS`` of the class of a job of this lane and priority
    (clamped to ``keys.PRIORITIES``)."""
    found = _CLASS_INDEX.get((lane, max(min(priority, keys.PRIORITIES[0]), keys.PRIORITIES[-1])))
    if found is None:
        raise ValueError(f"unknown lane {lane!r}")
    return found


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WaitingIndex:
    def __init__(self, client: redis.Redis, *, scan_limit: int = DEFAULT_SCAN_LIMIT) -> None:
        self.redis = client
        self.scan_limit = scan_limit  # waiting jobs a pop looks through past capped tenants
        self._push = client.register_script(lua_source("scheduler.queue", "push.lua"))
        self._pop = client.register_script(lua_source("scheduler.queue", "pop.lua"))
        self._position = client.register_script(lua_source("scheduler.queue", "position.lua"))
        self._standing = client.register_script(lua_source("scheduler.queue", "standing.lua"))
        self._promote = client.register_script(lua_source("scheduler.queue", "promote.lua"))
        self._requeue = client.register_script(lua_source("scheduler.queue", "requeue.lua"))

    def push(self, entries: Sequence[IndexEntry]) -> None:
        """Add jobs at the tail of their class, in the given order (one script call per chunk)."""
        push_keys = [*keys.CLASS_KEYS, keys.SEQ, keys.BULK_TENANTS, keys.BULK_ROUND,
                     keys.JOB_TENANTS]
        for start in range(0, len(entries), 5000):
            args: list[str | int] = [_CLASS_COUNT]
            for entry in entries[start : start + 5000]:
                args += [entry.job_id, entry.class_index, entry.tenant_id]
            if len(args) > 1:
                self._push(keys=push_keys, args=args)
        self.wake()

    def pop_for_dispatch(self, count: int) -> list[str]:
        return self.take(count)[0]

    def take(self, count: int, lease_ms: int = DEFAULT_LEASE_MS) -> tuple[list[str], int]:
        """Up to ``count`` jobs from the head, now in flight and leased for ``lease_ms``, and
        their dispatch token (the dispatch time in ms, which a worker checks so that a stale
        message is never run twice). A job whose tenant already has its ``max_running`` jobs
        in flight is passed over and keeps its place (``scheduler.tenants.quotas``)."""
        token = now_ms()
        if count <= 0:
            return [], token
        ids = self._pop(keys=[*keys.CLASS_KEYS, keys.INFLIGHT, keys.DISPATCHED, keys.BULK_ROUND,
                              keys.DISPATCH_COUNT, keys.LEASES, keys.LEASE_OWNERS,
                              keys.JOB_TENANTS, keys.TENANT_MAX_RUNNING],
                        args=[_CLASS_COUNT, count, token, lease_ms, self.scan_limit])
        return [_text(i) for i in ids], token

    def dispatch_count(self) -> int:
        """Jobs dispatched so far (a snapshot's positions are this much out of date)."""
        return int(self.redis.get(keys.DISPATCH_COUNT) or 0)

    def is_current_dispatch(self, job_id: str, token: int) -> bool:
        """Whether a worker's message is the job's live dispatch (not one since given up on)."""
        score = self.redis.zscore(keys.INFLIGHT, job_id)
        return score is not None and int(score) == int(token)

    def requeue(self, job_ids: Sequence[str]) -> int:
        """Return dispatched jobs that never started to their place in the queue (a worker gives
        back a job it cannot load); their leases go with them."""
        if not job_ids:
            return 0
        return int(self._requeue(keys=[*keys.CLASS_KEYS, keys.INFLIGHT, keys.DISPATCHED,
                                       keys.LEASES, keys.LEASE_OWNERS],
                                 args=[_CLASS_COUNT, *job_ids]))

    def position(self, job_id: str) -> int | None:
        """0 = next to be dispatched; None when the job is not waiting."""
        rank = int(self._position(keys=list(keys.CLASS_KEYS), args=[job_id]))
        return None if rank < 0 else rank

    def standing(self, job_id: str) -> tuple[int | None, bool, int]:
        """``position``, ``is_dispatched`` and ``dispatch_count`` in one round trip (a poll)."""
        rank, inflight, count = self._standing(
            keys=[*keys.CLASS_KEYS, keys.INFLIGHT, keys.DISPATCH_COUNT], args=[job_id])
        return (None if int(rank) < 0 else int(rank)), bool(int(inflight)), int(count)

    def depth(self, lane: str | None = None) -> int:
        class_keys = [k for k in keys.CLASS_KEYS if lane is None or f":{lane}:" in k]
        pipe = self.redis.pipeline()
        for key in class_keys:
            pipe.zcard(key)
        return sum(int(n) for n in pipe.execute())

    def head(self, count: int) -> list[str]:
        """The next ``count`` job ids in dispatch order (for the ETA snapshot)."""
        found: list[str] = []
        for key in keys.CLASS_KEYS:
            if len(found) >= count:
                break
            ids = self.redis.zrange(key, 0, count - len(found) - 1)
            found += [_text(i) for i in ids]  # type: ignore[arg-type]
        return found

    def remove(self, job_id: str) -> bool:
        """Take a job out of the queue wherever it waits (cancel), or out of flight if it was
        dispatched but not started (its worker will find the message stale)."""
        pipe = self.redis.pipeline()
        for key in (*keys.CLASS_KEYS, keys.PARKED):
            pipe.zrem(key, job_id)
        waiting = len(keys.CLASS_KEYS) + 1
        pipe.zrem(keys.INFLIGHT, job_id)
        pipe.hdel(keys.DISPATCHED, job_id)
        pipe.zrem(keys.LEASES, job_id)
        pipe.hdel(keys.LEASE_OWNERS, job_id)
        pipe.hdel(keys.JOB_TENANTS, job_id)
        return any(pipe.execute()[:waiting + 2])  # waiting, parked, in flight or dispatched

    def is_dispatched(self, job_id: str) -> bool:
        """Handed to the workers and not finished (or parked) yet."""
        return self.redis.zscore(keys.INFLIGHT, job_id) is not None

    def inflight_count(self) -> int:
        return int(self.redis.zcard(keys.INFLIGHT))

    def inflight_by_tenant(self) -> dict[str, int]:
        """Each tenant's jobs in flight, counted as the pop counts them (unknown tenant: "")."""
        ids = [_text(i) for i in self.redis.zrange(keys.INFLIGHT, 0, -1)]  # type: ignore[arg-type]
        counts: dict[str, int] = {}
        for start in range(0, len(ids), 1000):
            for tenant in self.redis.hmget(keys.JOB_TENANTS, ids[start:start + 1000]):
                name = _text(tenant) if tenant is not None else ""
                counts[name] = counts.get(name, 0) + 1
        return counts

    def remember_tenants(self, owners: dict[str, str]) -> int:
        """Record the tenant of jobs the index holds without one (after a flush or an upgrade);
        returns how many were missing."""
        ids = list(owners)
        missing = 0
        for start in range(0, len(ids), 5000):
            part = ids[start:start + 5000]
            known = self.redis.hmget(keys.JOB_TENANTS, part)
            absent = {j: owners[j] for j, k in zip(part, known, strict=True) if k is None}
            if absent:
                self.redis.hset(keys.JOB_TENANTS, mapping=absent)  # type: ignore[arg-type]
                missing += len(absent)
        return missing

    def park(self, job_id: str, not_before_ms: int) -> None:
        """A dispatched job whose whole route is unavailable waits, out of the queue, until then."""
        pipe = self.redis.pipeline()
        pipe.zrem(keys.INFLIGHT, job_id)
        pipe.zadd(keys.PARKED, {job_id: not_before_ms})
        pipe.hdel(keys.RUNNING, job_id)
        pipe.zrem(keys.LEASES, job_id)
        pipe.hdel(keys.LEASE_OWNERS, job_id)
        pipe.execute()
        self.wake()

    def promote_due(self, limit: int = 1000) -> int:
        """Return parked jobs whose time has come to their original place; returns how many."""
        return int(self._promote(keys=[*keys.CLASS_KEYS, keys.PARKED, keys.DISPATCHED],
                                 args=[_CLASS_COUNT, now_ms(), limit]))

    def next_parked_due_ms(self) -> int | None:
        first = self.redis.zrange(keys.PARKED, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def finished(self, job_id: str) -> None:
        """A worker is done with a dispatched job: free its slot and wake the dispatcher."""
        pipe = self.redis.pipeline()
        pipe.zrem(keys.INFLIGHT, job_id)
        pipe.hdel(keys.DISPATCHED, job_id)
        pipe.hdel(keys.RUNNING, job_id)
        pipe.zrem(keys.LEASES, job_id)
        pipe.hdel(keys.LEASE_OWNERS, job_id)
        pipe.hdel(keys.JOB_TENANTS, job_id)
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
        for key in (*keys.CLASS_KEYS, keys.INFLIGHT, keys.PARKED):
            pipe.zmscore(key, ids)
        found: set[str] = set()
        for scores in pipe.execute():
            found.update(i for i, s in zip(ids, scores, strict=True) if s is not None)
        return found

    def missing(self, jobs: Sequence[tuple[str, str, int]]) -> set[str]:
        """Which of these (job id, lane, priority) are in no index. A waiting job can only be
        in its own class, so each id is looked up in three sets (its class, in flight, parked),
        not in every class."""
        if not jobs:
            return set()
        by_class: dict[int, list[str]] = {}
        for job_id, lane, priority in jobs:
            by_class.setdefault(class_index(lane, priority), []).append(job_id)
        ids = [job[0] for job in jobs]
        pipe = self.redis.pipeline()  # one transaction: a job moving between sets is seen once
        for class_at, members in by_class.items():
            pipe.zmscore(keys.CLASS_KEYS[class_at - 1], members)
        pipe.zmscore(keys.INFLIGHT, ids)
        pipe.zmscore(keys.PARKED, ids)
        absent = set(ids)
        for members, scores in zip([*by_class.values(), ids, ids], pipe.execute(), strict=True):
            absent.difference_update(m for m, s in zip(members, scores, strict=True)
                                     if s is not None)
        return absent
