"""The dispatcher: moves jobs from the waiting index into Celery as worker capacity frees up.

Only one dispatcher is active at a time (a Redis lease); others wait on standby. It wakes on events
(a job arrived, a job finished) and on a short timer, never floods Celery: capacity is the
concurrency live workers advertise, minus jobs in flight, plus a small buffer so no worker idles.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from scheduler import capacity, keys
from scheduler.index import WaitingIndex
from scheduler.queue import reconcile, recover_stale

log = logging.getLogger(__name__)

_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def make_sender(redis_url: str) -> Celery:
    """A Celery client that only sends tasks by name; it imports nothing of the workers."""
    app = Celery("imgq-dispatcher", broker=redis_url)
    app.conf.broker_connection_retry_on_startup = True
    return app


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        sessions: sessionmaker[Session],
        sender: Celery,
        *,
        buffer: int = 1,
        interval_s: float = 0.5,
        lease_s: float = 5.0,
        reconcile_every_s: float = 30.0,
        stale_s: float = 600.0,
    ) -> None:
        self.redis = client
        self.index = WaitingIndex(client)
        self.sessions = sessions
        self.sender = sender
        self.buffer = buffer
        self.interval_s = interval_s
        self.lease_ms = int(lease_s * 1000)
        self.reconcile_every_s = reconcile_every_s
        self.stale_s = stale_s
        self.holder = f"{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW_LEASE)
        self._release = client.register_script(_RELEASE_LEASE)
        self.stopping = threading.Event()
        self.dispatched = 0
        self.leader = False

    def hold_lease(self) -> bool:
        return bool(self._renew(keys=[keys.DISPATCH_LEASE], args=[self.holder, self.lease_ms]))

    def free_slots(self) -> int:
        total = sum(capacity.live_workers(self.redis).values())
        if total == 0:
            return 0
        return total + self.buffer - self.index.inflight_count()

    def dispatch_once(self) -> int:
        """Hand out as many jobs as there are free slots; returns how many were sent."""
        job_ids, token = self.index.take(self.free_slots())
        for job_id in job_ids:
            self.sender.send_task(keys.GENERATE_TASK, args=[job_id, token],
                                  queue=keys.GENERATE_QUEUE)
        self.dispatched += len(job_ids)
        return len(job_ids)

    def _wait_s(self) -> float:
        """Sleep until woken, the next timer tick, or the next parked job falls due."""
        due_ms = self.index.next_parked_due_ms()
        if due_ms is None:
            return self.interval_s
        return max(0.05, min(self.interval_s, (due_ms - time.time() * 1000) / 1000))

    def run(self) -> None:
        last_reconcile = 0.0
        leader = False
        while not self.stopping.is_set():
            self.leader = leader
            try:
                if not self.hold_lease():
                    if leader:
                        log.warning("dispatcher lease lost; standing by")
                    leader = False
                    self.stopping.wait(self.interval_s)
                    continue
                if not leader:
                    log.info("dispatcher %s is active", self.holder)
                    leader = True
                    last_reconcile = 0.0
                if time.monotonic() - last_reconcile > self.reconcile_every_s:
                    healed = reconcile(self.sessions, self.index)
                    if healed:
                        log.warning("reconciled %d queued jobs missing from the waiting index", healed)
                    requeued, cleared = recover_stale(self.sessions, self.index, self.stale_s)
                    if requeued or cleared:
                        log.warning("stale dispatches: %d put back in the queue, %d cleared",
                                    requeued, cleared)
                    last_reconcile = time.monotonic()
                self.index.promote_due()
                self.dispatch_once()
                self.index.wait_for_wake(self._wait_s())
            except redis.RedisError as exc:
                log.warning("dispatcher cannot reach Redis (%s); retrying", exc)
                self.stopping.wait(1.0)
        if leader:
            self._release(keys=[keys.DISPATCH_LEASE], args=[self.holder])

    def stop(self) -> None:
        self.stopping.set()
