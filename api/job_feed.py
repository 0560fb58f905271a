"""The job rows every job stream of an API process follows, read together.

``JobFeed`` shares one read among a process's job streams: after each published snapshot (and,
while none comes, at most twice per fallback period) the first stream to ask loads every job
watched by any stream of the process in one query (its attempts in one more; ``CHUNK`` ids per
query when very many are watched), and each stream takes its own job from that result. The
database is read a constant number of times per snapshot whatever the number of clients; each
stream then asks Redis for its own job's position and ETA (``JobQueue.progress``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload, sessionmaker
from starlette.concurrency import run_in_threadpool

from storage.models import Job

CHUNK = 500
"""Job ids per ``IN (...)`` list."""


def load_jobs(sessions: sessionmaker[Session], job_ids: Collection[str]) -> dict[str, Job]:
    """The jobs of ``job_ids`` that exist, with their attempts loaded, by id (of any tenant:
    the caller checks the owner)."""
    found: dict[str, Job] = {}
    with sessions() as session:
        ids = sorted(job_ids)
        for at in range(0, len(ids), CHUNK):
            jobs = session.scalars(select(Job).where(Job.id.in_(ids[at:at + CHUNK]))
                                   .options(selectinload(Job.attempts)))
            found.update((job.id, job) for job in jobs)
    return found


class JobFeed:
    """The watched jobs of a process's job streams, loaded once per snapshot for all of them.

    A stream ``watching`` a job asks for it after each published snapshot (``heard``: the
    listener's count of them) or after its fallback period; the first to ask loads every
    watched job (in a thread) and every other stream woken by the same snapshot takes its job
    from that load. While no snapshot comes, a load younger than ``max_age_s`` is reused. A job
    asked for that the load under way does not cover is loaded by the next one. A failed load
    fails every stream waiting on it."""

    def __init__(self, load: Callable[[Collection[str]], dict[str, Job]]) -> None:
        self._load = load
        self.loads = 0
        self._watched: Counter[str] = Counter()
        self._jobs: dict[str, Job] = {}
        self._ids: frozenset[str] = frozenset()
        self._heard = -1
        self._loaded_at = 0.0
        self._pending: asyncio.Future[dict[str, Job]] | None = None
        self._pending_ids: frozenset[str] = frozenset()
        self._pending_heard = -1
        self._pending_at = 0.0

    @property
    def watched(self) -> int:
        """Distinct jobs followed by this process's streams."""
        return len(self._watched)

    @contextmanager
    def watching(self, job_id: str) -> Iterator[None]:
        """Include ``job_id`` in every load while the block runs."""
        self._watched[job_id] += 1
        try:
            yield
        finally:
            self._watched[job_id] -= 1
            if not self._watched[job_id]:
                del self._watched[job_id]

    async def job(self, job_id: str, heard: int, max_age_s: float) -> Job | None:
        """The job row (None if there is none), loaded after the ``heard``-th snapshot was
        announced and no more than ``max_age_s`` before this call."""
        oldest = time.monotonic() - max_age_s
        if job_id in self._ids and self._heard >= heard and self._loaded_at >= oldest:
            return self._jobs.get(job_id)
        while True:
            if self._pending is None:
                ids = frozenset(self._watched) | {job_id}
                self._pending = asyncio.ensure_future(self._run(ids, heard))
                self._pending.add_done_callback(_retrieve)
                self._pending_ids, self._pending_heard = ids, heard
                self._pending_at = time.monotonic()
            pending, its_ids = self._pending, self._pending_ids
            its_heard, its_start = self._pending_heard, self._pending_at
            jobs = await asyncio.shield(pending)  # a client leaving cancels only its own wait
            if job_id in its_ids and its_heard >= heard and its_start >= oldest:
                return jobs.get(job_id)
            # That load began before this client's snapshot, or without its job: one more.

    async def _run(self, ids: frozenset[str], heard: int) -> dict[str, Job]:
        started = time.monotonic()
        try:
            jobs = await run_in_threadpool(self._load, ids)
            self.loads += 1
            self._jobs, self._ids, self._heard, self._loaded_at = jobs, ids, heard, started
            return jobs
        finally:
            self._pending = None


def _retrieve(future: asyncio.Future[dict[str, Job]]) -> None:
    """Mark a failed load's error as seen even if every stream waiting on it has left."""
    if not future.cancelled():
        future.exception()
