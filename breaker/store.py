"""The narrow interface workers, the scheduler and the API use: ``BreakerStore``.

Two implementations keep the same contract (one test suite runs against both):
``InMemoryBreakerStore`` (one breaker per process; tests, benchmarks) and ``RedisBreakerStore``
(shared by every worker on every host).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from breaker.health import ModelHealth
from breaker.state import BreakerState, Decision, Outcome, Transition
from imagequeue.failopen import REDIS_FAILURES


@dataclass(frozen=True)
class Event:
    """One entry of the transition log."""

    model: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    calls: int
    failures: int
    slow: int
    at_ms: int

    @classmethod
    def of(cls, model: str, transition: Transition) -> Event:
        t = transition
        return cls(model, t.from_state, t.to_state, t.reason, t.calls, t.failures, t.slow, t.at_ms)


class BreakerStore(Protocol):
    def allow(self, model: str, call_id: str | None = None) -> Decision:
        """May a call to ``model`` start now? Pass ``decision.probe`` back to ``record``.

        An admitted call with a ``call_id`` (unique, e.g. ``job_id:uuid8``) counts as in flight
        for the slow-start gate and hang detection until ``record`` or ``release`` is given the
        same id (or it expires after the model's timeout plus a margin). A denial with reason
        ``gate_shut`` is worth waiting on (results are due); ``hanging`` is not."""
        ...

    def record(
        self,
        model: str,
        outcome: Outcome,
        latency_s: float,
        *,
        probe: bool,
        retry_after_s: float | None = None,
        reason: str | None = None,
        call_id: str | None = None,
    ) -> BreakerState:
        """Apply one call's outcome (and release ``call_id``); returns the state after it."""
        ...

    def release(self, model: str, call_id: str) -> None:
        """The admitted call ``call_id`` ended without an outcome to record."""
        ...

    def release_calls(self, model: str, holder_prefix: str) -> int:
        """Every call in flight whose id starts with ``holder_prefix`` (a dead run's) is
        released; returns how many."""
        ...

    def snapshot(self, model: str) -> ModelHealth: ...

    def force_open(self, model: str, reason: str) -> None: ...

    def disable(self, model: str) -> None: ...

    def close(self, model: str) -> None:
        """Same as ``reset``."""
        ...

    def reset(self, model: str) -> None:
        """Closed, empty window, no cooldown, misconfiguration cleared."""
        ...

    def events(self, model: str | None = None, count: int = 50) -> list[Event]:
        """The most recent transitions, newest first."""
        ...


def unavailable(store: BreakerStore, model: str) -> bool:
    """Whether the breaker keeps ``model`` from serving now (open, forced open, quota cooldown,
    misconfigured). False when Redis is down: the workers fail open then, too."""
    try:
        return not store.snapshot(model).serving
    except REDIS_FAILURES:
        return False
