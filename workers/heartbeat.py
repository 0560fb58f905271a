"""The worker's heartbeat: who it is and how many jobs it can run, every
``IMGQ_WORKER_HEARTBEAT_S``, in Redis (``scheduler.queue.heartbeats``); the dispatcher counts the
slots of the live workers. A worker shutting down beats at once with ``draining`` set, so the
dispatcher stops counting its slots before the next period, and removes its entry as it leaves.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors
from scheduler.queue import heartbeats
from scheduler.queue.heartbeats import WorkerIdentity

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, client: redis.Redis, name: str, slots: int, period_s: float,
                 identity: WorkerIdentity) -> None:
        self.redis, self.name, self.slots, self.period_s = client, name, slots, period_s
        self.identity = identity
        self.draining = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="imgq-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def drain(self) -> None:
        """From now on: no free slot here."""
        self.draining = True
        self._wake.set()

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop beating and remove this worker's entry (after the last beat, never before)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        with contextlib.suppress(redis.RedisError):
            heartbeats.forget(self.redis, self.name)

    def _run(self) -> None:
        # A Redis outage is logged when it starts and when it ends, not on every beat.
        outages = OutageLog("worker heartbeat", log, backoff_s=self.period_s)
        errors = RepeatedErrors("worker heartbeat", log)
        while not self._stop.is_set():
            try:
                heartbeats.heartbeat(self.redis, self.name, self.slots, self.period_s * 3,
                                     self.identity, draining=self.draining)
            except DEPENDENCY_ERRORS as exc:
                outages.failed(exc)
            except Exception as exc:  # noqa: BLE001 - a missed beat must not kill the worker
                errors.error(exc)
            else:
                outages.succeeded(("redis",))
            self._wake.wait(self.period_s)
            self._wake.clear()
