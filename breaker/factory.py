"""Building the breaker the settings ask for: shared in Redis, one per process, or none.

``make_breaker_store`` is the one place that turns settings and the models' timings into a
``BreakerStore``; workers, the CLI and the API all build theirs with it so they agree on policy.
The models come in as anything with a baseline latency and a timeout (the catalogue's
``ModelSpec``), so the breaker does not depend on the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from breaker import (
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    Decision,
    Event,
    InMemoryBreakerStore,
    ModelHealth,
    Outcome,
    RedisBreakerStore,
)
from breaker.health import health
from breaker.state import MachineState
from imagequeue.failopen import fail_open_redis
from imagequeue.settings import Settings


class ModelTimings(Protocol):
    @property
    def baseline_latency_s(self) -> float: ...

    @property
    def timeout_s(self) -> float: ...


def policy_source(settings: Settings,
                  models: Mapping[str, ModelTimings]) -> Callable[[str], BreakerPolicy]:
    """Each model's policy: the thresholds from the settings, slow-call and probe-round limits
    from the model's own baseline latency and timeout."""

    def policy_for(model_id: str) -> BreakerPolicy:
        spec = models.get(model_id)
        baseline_s = spec.baseline_latency_s if spec is not None else 10.0
        timeout_s = spec.timeout_s if spec is not None else 120.0
        return BreakerPolicy.for_baseline(
            baseline_s,
            failure_rate_threshold=settings.breaker_failure_rate_threshold,
            window_s=settings.breaker_window_s,
            minimum_calls=settings.breaker_minimum_calls,
            open_duration_s=settings.breaker_open_duration_s,
            half_open_probes=settings.breaker_half_open_probes,
            quota_default_cooldown_s=settings.breaker_quota_cooldown_s,
            probe_timeout_s=timeout_s + settings.breaker_probe_margin_s,
            gate=settings.breaker_gate,
            gate_full_calls=settings.breaker_gate_full_calls,
        )

    return policy_for


def make_breaker_store(settings: Settings, models: Mapping[str, ModelTimings]) -> BreakerStore:
    """The breaker for ``settings.breaker_mode``: ``shared`` (Redis, fails open), ``local``
    (in this process only) or ``off`` (always allows, remembers nothing)."""
    policy_for = policy_source(settings, models)
    if settings.breaker_mode == "shared":
        return RedisBreakerStore(fail_open_redis(settings.redis_url), policy_for)
    if settings.breaker_mode == "local":
        return InMemoryBreakerStore(policy_for)
    return NoBreaker(policy_for)


class NoBreaker:
    """A breaker that is not there: every call is allowed and nothing is remembered."""

    def __init__(self, policy_for: Callable[[str], BreakerPolicy]) -> None:
        self._policy_for = policy_for

    def allow(self, model: str, call_id: str | None = None) -> Decision:
        return Decision(allowed=True)

    def record(self, model: str, outcome: Outcome, latency_s: float, *, probe: bool,
               retry_after_s: float | None = None, reason: str | None = None,
               call_id: str | None = None) -> BreakerState:
        return BreakerState.CLOSED

    def release(self, model: str, call_id: str) -> None:
        return None

    def release_calls(self, model: str, holder_prefix: str) -> int:
        return 0

    def snapshot(self, model: str) -> ModelHealth:
        return health(model, MachineState(), self._policy_for(model), 0)

    def force_open(self, model: str, reason: str) -> None:
        return None

    def disable(self, model: str) -> None:
        return None

    def close(self, model: str) -> None:
        return None

    def reset(self, model: str) -> None:
        return None

    def events(self, model: str | None = None, count: int = 50) -> list[Event]:
        return []
