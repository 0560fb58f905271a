"""The dispatcher: moves jobs from the waiting index into Celery as worker capacity frees up.

Only one dispatcher is active at a time (a Redis lease); others wait on standby. It wakes on events
(a job arrived, a job finished) and on a short timer, never floods Celery: capacity is the
concurrency live workers advertise, minus jobs in flight, plus a small buffer so no worker idles.

Every ``interval_s`` (not on every wake) it renews its own lease and sweeps the job leases
(``scheduler.queue.leases``). Every ``limits_refresh_s`` it
reloads the tenants' running caps, which the pop applies (``scheduler.tenants.quotas``). A thread
of its own heals Redis from the database every ``reconcile_every_s`` (the waiting index, leases,
and the tenants' queued and budget counters; ``scheduler.queue.reconcile``), so that dispatch
never waits on a pass. It rides out outages: each step that fails because PostgreSQL or Redis is
unreachable is logged once per outage and tried again on the next tick. When Redis comes back,
or comes back empty (its generation marker is gone), it reconciles at once, reading every queued
job. While workers report that they cannot reach the database, it hands out nothing.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from breaker import BreakerStore
from imagequeue import keys
from imagequeue.broker import broker_config
from imagequeue.settings import Settings
from scheduler.outages import OutageLog, RepeatedErrors
from scheduler.queue import heartbeats
from scheduler.queue.index import DEFAULT_LEASE_MS, WaitingIndex
from scheduler.queue.leases import Leases, adopt_running, sweep
from scheduler.queue.reconcile import Reconciler
from scheduler.tenants.quotas import (
    LimitDefaults,
    TenantCounters,
    budget_tenants,
    load_running_caps,
    publish_running_caps,
)
from storage.models import utcnow
from throttle import VendorLimits

log = logging.getLogger(__name__)

# 0: another dispatcher is active; 1: ours; 2: ours, and Redis had lost its data (no marker).
_RENEW_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 0
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('SET', KEYS[2], ARGV[1])
return 2
"""


_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def make_sender(settings: Settings) -> Celery:
    """A Celery client that only sends tasks by name; it imports nothing of the workers."""
    app = Celery("imgq-dispatcher")
    app.conf.update(**broker_config(settings), broker_connection_retry_on_startup=True)
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
        reconcile_lookback_s: float = 120.0,
        reconcile_full_every_s: float = 600.0,
        stale_s: float = 600.0,
        job_lease_ms: int = DEFAULT_LEASE_MS,
        limits: VendorLimits | None = None,
        models: Sequence[str] = (),
        breakers: BreakerStore | None = None,
        tenant_defaults: LimitDefaults | None = None,
        limits_refresh_s: float = 5.0,
        scan_limit: int | None = None,
    ) -> None:
        self.redis = client
        self.index = (WaitingIndex(client) if scan_limit is None
                      else WaitingIndex(client, scan_limit=scan_limit))
        self.tenant_defaults = tenant_defaults or LimitDefaults()
        self.counters = TenantCounters(client, self.tenant_defaults)
        self.limits_refresh_s = limits_refresh_s
        self.sessions = sessions
        self.sender = sender
        self.buffer = buffer
        self.interval_s = interval_s
        self.lease_ms = int(lease_s * 1000)
        self.reconcile_every_s = reconcile_every_s
        self.reconciler = Reconciler(sessions, self.index, lookback_s=reconcile_lookback_s,
                                     full_every_s=reconcile_full_every_s)
        self.heal_now = threading.Event()
        self.heal_outages = OutageLog("reconcile", log)
        self.heal_errors = RepeatedErrors("reconcile", log)
        self.stale_s = stale_s
        self.job_lease_ms = job_lease_ms
        self.leases = Leases(client, job_lease_ms)
        self.limits = limits
        self.models = tuple(models)
        self.breakers = breakers
        self.outages = OutageLog("dispatcher", log)
        self.holder = f"{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW_LEASE)
        self._release = client.register_script(_RELEASE_LEASE)
        self.stopping = threading.Event()
        self.dispatched = 0
        self.leader = False

    def hold_lease(self) -> bool:
        return self._hold_lease() > 0

    def _hold_lease(self) -> int:
        """0 standing by, 1 active, 2 active and Redis was found empty."""
        return int(self._renew(keys=[keys.DISPATCH_LEASE, keys.GENERATION],
                               args=[self.holder, self.lease_ms]))

    def free_slots(self) -> int:
        if self.leases.database_unreachable():
            return 0  # workers cannot load jobs: hold them in the queue
        workers = heartbeats.live_workers(self.redis)
        total = heartbeats.total_slots(workers)
        if total == 0:
            return 0
        busy = self.index.inflight_count()
        draining = {b.holder for b in workers.values() if b.draining and b.holder}
        if draining:  # what a worker shutting down still runs holds none of the others' slots
            held = heartbeats.held_by(self.redis)
            busy -= sum(held[holder] for holder in draining)
        return total + self.buffer - busy

    def dispatch_once(self) -> int:
        """Hand out as many jobs as there are free slots; returns how many were sent."""
        job_ids, token = self.index.take(self.free_slots(), self.job_lease_ms)
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

    def heal(self) -> None:
        """Index the queued jobs Redis lacks, lease the running ones that have no lease, and
        recount the tenants' queued and budget levels and reload their running caps."""
        self.refresh_caps()
        healed = self.reconciler.run_pass()
        adopted = adopt_running(self.sessions, self.leases)
        if healed or adopted:
            log.warning("reconciled %d queued jobs missing from the waiting index; leased %d "
                        "running jobs that had no lease", healed, adopted)
        with self.sessions() as session:
            tenants = budget_tenants(session, self.tenant_defaults)
        corrected = self.counters.rebuild(self.sessions, utcnow(), tenants)
        if corrected:
            log.info("tenant limits: %d counters recounted from the database", corrected)

    def refresh_caps(self) -> None:
        """The tenants' running caps, from the database to the HASH the pop reads."""
        with self.sessions() as session:
            caps = load_running_caps(session)
        publish_running_caps(self.redis, caps, self.tenant_defaults.max_running)

    def sweep_leases(self) -> None:
        result = sweep(self.sessions, self.index, self.leases, self.stale_s, self.limits,
                       self.models, self.breakers)
        if result.requeued or result.cleared:
            log.warning("job leases: %d ran out and went back to the queue, %d cleared",
                        result.requeued, result.cleared)

    def heal_full_now(self) -> None:
        """Ask the healing thread for a pass over every queued job, at once."""
        self.reconciler.request_full()
        self.heal_now.set()

    def heal_loop(self) -> None:
        """The healing thread: a pass every ``reconcile_every_s`` and when asked, while active."""
        while not self.stopping.is_set():
            self.heal_now.wait(self.reconcile_every_s)
            self.heal_now.clear()
            if self.stopping.is_set() or not self.leader:
                continue
            try:
                with self.heal_outages.guard(self.stopping):
                    self.heal()
            except Exception as exc:  # noqa: BLE001 - a bad row must not end the healing
                self.heal_errors.error(exc)
                self.stopping.wait(self.heal_outages.backoff_s)

    def run(self) -> None:
        healing = threading.Thread(target=self.heal_loop, name="imgq-reconcile", daemon=True)
        healing.start()
        leader, recoveries, last_refresh, chores_due_s = False, 0, 0.0, 0.0
        while not self.stopping.is_set():
            # The lease, the running caps and the job leases are seen to every ``interval_s``,
            # not on every wake: a job that arrives or ends is dispatched for at once.
            if time.monotonic() >= chores_due_s:
                chores_due_s = time.monotonic() + self.interval_s
                self.leader = leader
                held = -1
                with self.outages.guard(self.stopping, uses=("redis",)):
                    held = self._hold_lease()
                    if held == 0:
                        if leader:
                            log.warning("dispatcher lease lost; standing by")
                        leader = self.leader = False
                        self.stopping.wait(self.interval_s)
                        continue
                    if not leader or held == 2:
                        if leader:
                            log.warning("Redis lost its data (flush or empty restart); "
                                        "reconciling from the database now")
                        else:
                            log.info("dispatcher %s is active", self.holder)
                        leader = self.leader = True
                        self.heal_full_now()
                if held < 0:
                    chores_due_s = 0.0  # Redis is unreachable: the lease first, next time
                    continue
                if time.monotonic() - last_refresh > self.limits_refresh_s:
                    with self.outages.guard(self.stopping):
                        self.refresh_caps()
                        last_refresh = time.monotonic()
                with self.outages.guard(self.stopping):
                    self.sweep_leases()
            with self.outages.guard(self.stopping, uses=("redis",)):
                self.index.promote_due()
                self.dispatch_once()
                self.index.wait_for_wake(
                    min(self._wait_s(), max(0.01, chores_due_s - time.monotonic())))
            if self.outages.recoveries != recoveries:
                recoveries = self.outages.recoveries
                self.heal_full_now()  # an outage just ended: heal what it may have missed
        healing.join(timeout=5.0)  # a pass under way ends first (it is in a daemon thread)
        if leader:
            try:
                self._release(keys=[keys.DISPATCH_LEASE], args=[self.holder])
            except redis.RedisError as exc:
                log.warning("could not release the dispatcher lease (it expires by itself): %s",
                            exc)

    def stop(self) -> None:
        self.stopping.set()
        self.heal_now.set()
