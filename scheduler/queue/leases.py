"""Leases on dispatched jobs: a job handed to a worker is owned by a lease, not by the broker.

The dispatcher leases each job it hands out (``WaitingIndex.take``). The worker that receives
it takes the lease over and renews it with its heartbeat (``Leases.hold``); every expiry is
timed by Redis ``TIME``, so host clocks do not matter. When a lease runs out (the worker was
killed, its host vanished, it hung) ``sweep`` puts the job back at its place in the queue and
frees what it held. A worker shutting down does not wait for that: it ``release``s what it
still holds, those leases expire at once, and the same sweep requeues the jobs. The broker's
visibility timeout never recovers a job: a message it redelivers carries a dispatch token that
no longer matches, or finds a live holder, and is ignored.

A dispatch that no worker has received yet (its message still waits in the broker) is extended
rather than taken back, until it is ``stale_s`` old: then its message is taken as lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from breaker import BreakerStore
from imagequeue import keys
from imagequeue.lua import lua_source
from scheduler.queue.index import IndexEntry, WaitingIndex
from storage.models import Job, JobStatus
from throttle import VendorLimits

log = logging.getLogger(__name__)

RECLAIMED = "reclaimed"

# Lease (KEYS[1]) running jobs that have none, and count them in flight (KEYS[2]) again, so the
# dispatcher's slots and each tenant's running cap see them before their workers' next renewal.
_ADOPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = 0
for i = 2, #ARGV do
  added = added + redis.call('ZADD', KEYS[1], 'NX', now + tonumber(ARGV[1]), ARGV[i])
  redis.call('ZADD', KEYS[2], 'NX', now, ARGV[i])
end
return added
"""



def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Lapsed:
    job_id: str
    owner: str  # "token", "token|worker", "" (no owner: adopted after a flush)
    dispatched_ms: int | None

    @property
    def received(self) -> bool:
        """A worker took the job (or nobody knows who has it): it is not waiting in the broker."""
        return "|" in self.owner or not self.owner


@dataclass(frozen=True)
class SweepResult:
    requeued: int = 0
    extended: int = 0
    cleared: int = 0


class Leases:
    def __init__(self, client: redis.Redis, lease_ms: int) -> None:
        self.redis = client
        self.lease_ms = lease_ms
        self._hold = client.register_script(lua_source("scheduler.queue", "lease_hold.lua"))
        self._lapsed = client.register_script(lua_source("scheduler.queue", "lease_lapsed.lua"))
        self._reclaim = client.register_script(lua_source("scheduler.queue", "lease_reclaim.lua"))
        self._adopt = client.register_script(_ADOPT)
        self._release = client.register_script(lua_source("scheduler.queue", "lease_release.lua"))

    def hold(self, worker: str, jobs: Sequence[tuple[str, int]]) -> list[bool]:
        """Take or renew the leases of (job id, dispatch token) pairs; False where not ours."""
        if not jobs:
            return []
        args: list[str | int] = [self.lease_ms, worker]
        for job_id, token in jobs:
            args += [job_id, str(token)]
        flags = self._hold(keys=[keys.LEASES, keys.LEASE_OWNERS, keys.INFLIGHT], args=args)
        return [bool(int(f)) for f in flags]

    def release(self, worker: str, jobs: Sequence[tuple[str, int]]) -> int:
        """Hand (job id, dispatch token) pairs this worker holds back now (it is shutting down):
        their leases expire at once and the next ``sweep`` requeues each at its place, the path a
        lapsed lease takes. Returns how many were still this worker's."""
        if not jobs:
            return 0
        args: list[str | int] = [worker]
        for job_id, token in jobs:
            args += [job_id, str(token)]
        return int(self._release(keys=[keys.LEASES, keys.LEASE_OWNERS, keys.DISPATCH_WAKE],
                                 args=args))

    def lapsed(self, limit: int = 500) -> list[Lapsed]:
        flat = [_text(v) for v in self._lapsed(keys=[keys.LEASES, keys.LEASE_OWNERS,
                                                      keys.INFLIGHT], args=[limit])]
        return [Lapsed(flat[i], flat[i + 1], int(float(flat[i + 2])) if flat[i + 2] else None)
                for i in range(0, len(flat), 3)]

    def reclaim(self, job_id: str) -> int:
        """-1 renewed meanwhile; 1 back at its place; 0 taken back, place unknown."""
        return int(self._reclaim(keys=self._reclaim_keys(), args=[len(keys.CLASS_KEYS), job_id,
                                                                  "reclaim", 0]))

    def extend(self, job_id: str) -> None:
        self._reclaim(keys=self._reclaim_keys(), args=[len(keys.CLASS_KEYS), job_id, "extend",
                                                       self.lease_ms])

    def adopt(self, job_ids: Sequence[str]) -> int:
        """Lease running jobs that have none (after a flush), so a dead worker's lapse."""
        if not job_ids:
            return 0
        return int(self._adopt(keys=[keys.LEASES, keys.INFLIGHT], args=[self.lease_ms, *job_ids]))

    def leased(self, job_ids: Sequence[str]) -> set[str]:
        if not job_ids:
            return set()
        scores = self.redis.zmscore(keys.LEASES, list(job_ids))
        return {j for j, s in zip(job_ids, scores, strict=True) if s is not None}

    def report_database_unreachable(self, ttl_ms: int) -> None:
        """A worker could not reach the database: the dispatcher holds back for ``ttl_ms``."""
        self.redis.set(keys.DATABASE_UNREACHABLE, "1", px=ttl_ms)

    def database_unreachable(self) -> bool:
        return bool(self.redis.exists(keys.DATABASE_UNREACHABLE))

    @staticmethod
    def _reclaim_keys() -> list[str]:
        return [*keys.CLASS_KEYS, keys.INFLIGHT, keys.DISPATCHED, keys.LEASES, keys.LEASE_OWNERS,
                keys.RUNNING]


def sweep(sessions: sessionmaker[Session], index: WaitingIndex, leases: Leases,
          stale_s: float, limits: VendorLimits | None = None,
          models: Sequence[str] = (), breakers: BreakerStore | None = None) -> SweepResult:
    """Take back every job whose lease ran out; clear those that have ended.

    The database first: a running job goes back to ``queued``; then Redis puts it back at its
    place (or at the tail of its class when the place was lost with a flush). The vendor
    concurrency slots and the places at the slow-start gate the dead run held are released at
    once instead of when they expire (a model's timeout plus a margin).
    """
    lapsed = leases.lapsed()
    if not lapsed:
        return SweepResult()
    ids = [entry.job_id for entry in lapsed]
    with sessions() as session:
        rows = {row.id: row for row in session.execute(
            select(Job.id, Job.status, Job.lane, Job.tenant_id, Job.priority)
            .where(Job.id.in_(ids))).all()}
    now_ms = time.time() * 1000
    requeued = extended = cleared = 0
    for entry in lapsed:
        row = rows.get(entry.job_id)
        if row is None or JobStatus(row.status).is_terminal:
            index.finished(entry.job_id)
            cleared += 1
            continue
        fresh = entry.dispatched_ms is not None and now_ms - entry.dispatched_ms < stale_s * 1000
        if not entry.received and fresh:
            leases.extend(entry.job_id)  # its message still waits in the broker
            extended += 1
            continue
        was_running = row.status == JobStatus.RUNNING.value
        if was_running:
            _set_status(sessions, entry.job_id, JobStatus.RUNNING, JobStatus.QUEUED)
        placed = leases.reclaim(entry.job_id)
        if placed < 0:  # renewed meanwhile: its worker is alive after all
            if was_running:
                _set_status(sessions, entry.job_id, JobStatus.QUEUED, JobStatus.RUNNING)
            continue
        if placed == 0:
            index.push([IndexEntry(row.id, row.lane, row.tenant_id, row.priority)])
        _release_calls(entry.job_id, models, limits, breakers)
        requeued += 1
        log.warning("job %s: its lease ran out or was handed back (owner %s); back in the queue",
                    entry.job_id, entry.owner.partition("|")[2] or "unknown")
    if requeued:
        index.wake()
    return SweepResult(requeued, extended, cleared)


def _release_calls(job_id: str, models: Sequence[str], limits: VendorLimits | None,
                   breakers: BreakerStore | None) -> None:
    holders = keys.job_holders(job_id)
    for model in models:
        if limits is not None:
            limits.release_holders(model, holders)
        if breakers is not None:
            breakers.release_calls(model, holders)


def _set_status(sessions: sessionmaker[Session], job_id: str, was: JobStatus,
                status: JobStatus) -> None:
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == was.value)
                        .values(status=status.value))


def adopt_running(sessions: sessionmaker[Session], leases: Leases) -> int:
    """Lease every running job that has no lease (Redis lost it): its worker, if alive, renews
    it at its next heartbeat; otherwise it lapses and ``sweep`` takes the job back. Every
    running job's tenant is recorded again, for the tenants' running caps."""
    with sessions() as session:
        running = {row.id: row.tenant_id for row in session.execute(
            select(Job.id, Job.tenant_id).where(Job.status == JobStatus.RUNNING.value))}
    if running:
        leases.redis.hset(keys.JOB_TENANTS, mapping=running)
    held = leases.leased(list(running))
    return leases.adopt([j for j in running if j not in held])
