"""The jobs a worker process holds, and the thread that renews their leases.

A job is held from the moment its message is received until its run has ended and its Redis
state is cleared; ``drop`` waits for a renewal in progress, so a renewal can never re-create the
lease of a job that has just finished. A worker shutting down ``hand_back``s what it holds: the
jobs go back to their places in the queue at once, and this process never renews or takes those
leases again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import redis

from scheduler.outages import OutageLog
from scheduler.queue.leases import Leases

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, leases: Leases, worker_id: str, period_s: float) -> None:
        self.leases = leases
        self.worker_id = worker_id
        self.period_s = period_s
        self._held: dict[str, int] = {}
        self._handed_back: set[str] = set()
        self._closed = False  # everything was handed back: the process is leaving
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outages = OutageLog("lease renewal", log)

    def hold(self, job_id: str, token: int) -> bool:
        """Take the job's lease; False if another live worker or a newer dispatch has it."""
        with self._lock:
            if self._closed:
                return False
            try:
                ours = self.leases.hold(self.worker_id, [(job_id, token)])[0]
            except redis.RedisError as exc:  # run it (at least once); renewals retry the lease
                log.warning("job %s: cannot take its lease (%s); running it anyway", job_id, exc)
                ours = True
            if ours:
                self._held[job_id] = token
            return ours

    def holds(self, job_id: str, token: int) -> bool:
        """Whether this process holds the job under ``token`` (taken when its message was
        received, renewed since): then it is the job's live dispatch, with no round trip."""
        with self._lock:
            return not self._closed and self._held.get(job_id) == token

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)
            self._changed.notify_all()

    def holding(self) -> int:
        with self._lock:
            return len(self._held)

    def wait_empty(self, timeout_s: float) -> bool:
        """Until this process holds no job (True), or ``timeout_s`` has passed (False)."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._held, timeout_s)

    def hand_back(self, job_ids: Iterable[str] | None = None) -> list[str]:
        """Give these held jobs (None: every one, and take no more) back to their places in the
        queue now; returns those handed back. If Redis cannot be reached their leases simply
        run out, as if this process had died."""
        with self._lock:
            if job_ids is None:
                self._closed = True
            wanted = list(self._held) if job_ids is None else list(job_ids)
            jobs = [(job_id, self._held.pop(job_id)) for job_id in wanted if job_id in self._held]
            self._handed_back.update(job_id for job_id, _ in jobs)
            self._changed.notify_all()
            if jobs:
                try:
                    self.leases.release(self.worker_id, jobs)
                except redis.RedisError as exc:
                    log.warning("cannot hand %d jobs back now (%s); their leases will run out",
                                len(jobs), exc)
        return [job_id for job_id, _ in jobs]

    def handed_back(self, job_id: str) -> bool:
        """The job was given back: its run here must not record anything."""
        with self._lock:
            return job_id in self._handed_back

    def renew(self) -> list[str]:
        """Renew every held lease; returns the jobs that are no longer ours (and forgets them)."""
        with self._lock:
            jobs = list(self._held.items())
            flags = self.leases.hold(self.worker_id, jobs)
            lost = [job_id for (job_id, _), ours in zip(jobs, flags, strict=True) if not ours]
            for job_id in lost:
                self._held.pop(job_id, None)
        for job_id in lost:
            log.warning("job %s: its lease was taken back by the scheduler (this worker missed "
                        "its renewals); the run goes on, the first result written wins", job_id)
        return lost

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="imgq-leases", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with self.outages.guard(self._stop, uses=("redis",)):
                self.renew()
