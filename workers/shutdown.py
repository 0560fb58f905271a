"""Warm shutdown: a worker told to stop (SIGTERM, Ctrl-C) leaves without losing or delaying a job.

At once it takes no new job: its heartbeat says it is draining, so the dispatcher counts none of
its slots, and Celery stops consuming; a job it had reserved but not started is handed back
instead of run. Running jobs may finish for ``IMGQ_WORKER_SHUTDOWN_GRACE_S``; then every job it
still holds is handed back at once (``LeaseKeeper.hand_back``: the leases expire now and the
scheduler's next sweep puts the jobs back at their places, long before ``IMGQ_LEASE_S`` would
have), the calls still under way give their places at the breaker's slow-start gate back, and the
process exits 0 without waiting for them: a thread cannot be stopped, and what it would record
is dropped (the call is on record as lost, as after a crash).
A cold shutdown (SIGQUIT, a second Ctrl-C) hands back at once.

Not Celery's soft shutdown (``worker_soft_shutdown_timeout``): it starts on SIGQUIT (on SIGTERM
only with ``REMAP_SIGTERM=SIGQUIT`` in the environment), waits out its whole timeout even when
every task has finished, and even then cannot stop a task running on a thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from workers.leases import LeaseKeeper

log = logging.getLogger(__name__)


class Drain:
    def __init__(self, keeper: LeaseKeeper, grace_s: float, *, draining: Callable[[], None],
                 leave: Callable[[], None], release_calls: Callable[[], int] = lambda: 0) -> None:
        self.keeper = keeper
        self.grace_s = grace_s
        self._release_calls = release_calls  # the breaker's in-flight entries of this process
        self._draining = draining  # the heartbeat: no free slot here any more
        self._leave = leave  # heartbeat entry and metrics port gone
        self.started = threading.Event()
        self._lock = threading.RLock()  # a second signal may arrive inside the first handler

    def begin(self, *, cold: bool = False) -> None:
        """The shutdown signal arrived (this runs in the signal handler: it only starts a
        thread). A second, cold one cuts the grace short."""
        with self._lock:
            first = not self.started.is_set()
            self.started.set()
        if first or cold:
            threading.Thread(target=self._run, args=(0.0 if cold else self.grace_s,),
                             name="imgq-drain", daemon=True).start()

    def refuse(self, job_id: str) -> bool:
        """True if the worker is shutting down: the job, reserved but not started, is handed
        back instead of run."""
        if not self.started.is_set():
            return False
        if self.keeper.hand_back([job_id]):
            log.info("job %s: not started, handed back to the queue (this worker is leaving)",
                     job_id)
        return True

    def end(self) -> None:
        """Celery's own shutdown is over (every running job ended within the grace): hand back
        what was reserved and never started, then leave."""
        handed = self.keeper.hand_back()
        if handed:
            log.info("%d reserved jobs handed back to the queue", len(handed))
        self._leave()

    def _run(self, grace_s: float) -> None:
        self._draining()
        if grace_s > 0:
            held = self.keeper.holding()
            if held:
                log.warning("shutting down: no new jobs; the %d running may finish for %g s",
                            held, grace_s)
            if self.keeper.wait_empty(grace_s):
                return  # Celery finishes the shutdown; ``end`` runs then
        handed = self.keeper.hand_back()
        released = self._release_calls()
        log.warning("shutting down: %d jobs still running handed back to their places in the "
                    "queue (%d vendor calls abandoned); exiting now", len(handed), released)
        self._leave()
        logging.shutdown()
        os._exit(0)
