"""Breaker policy: the thresholds and durations of one model's breaker.

Durations are seconds in the policy and whole milliseconds inside the machine and the Lua
scripts; ``to_ms`` is the single conversion both sides use, so they agree to the millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


def to_ms(seconds: float) -> int:
    """Seconds to whole milliseconds (round half up), the unit the machine and Lua compute in."""
    return math.floor(seconds * 1000 + 0.5)


@dataclass(frozen=True)
class BreakerPolicy:
    """Thresholds of one model's breaker (defaults from the design's field guide).

    ``slow_call_rate_threshold`` of 1.0 means slow calls alone never trip the breaker; set it
    lower (e.g. 0.8) to trip when that share of calls in the window is slow.
    ``probe_timeout_s`` bounds a half-open probe round: a probe whose outcome never arrives (its
    worker died) must not keep the breaker half-open with its budget spent forever. It also
    bounds how long a call counts as in flight (``breaker.gate``).

    ``gate`` turns on the slow-start gate and the hang detection of ``breaker.gate`` (off in a
    bare policy, which is then the plain breaker; the factory turns it on as the settings say):
    at most ``minimum_calls`` calls in flight while the window holds fewer outcomes than that,
    widening by one per success until ``gate_full_calls``, where it stops limiting.
    """

    failure_rate_threshold: float = 0.30
    window_s: int = 60
    minimum_calls: int = 5
    open_duration_s: float = 300.0
    slow_call_threshold_s: float = 60.0
    slow_call_rate_threshold: float = 1.0
    half_open_probes: int = 3
    quota_default_cooldown_s: float = 60.0
    probe_timeout_s: float = 180.0
    gate: bool = False
    gate_full_calls: int = 64

    def __post_init__(self) -> None:
        if not isinstance(self.window_s, int) or self.window_s < 1:
            raise ValueError("window_s must be a whole number of seconds >= 1")
        if not 0.0 < self.failure_rate_threshold <= 1.0:
            raise ValueError("failure_rate_threshold must be in (0, 1]")
        if not 0.0 < self.slow_call_rate_threshold <= 1.0:
            raise ValueError("slow_call_rate_threshold must be in (0, 1]")
        if self.minimum_calls < 1 or self.half_open_probes < 1:
            raise ValueError("minimum_calls and half_open_probes must be >= 1")
        if self.gate_full_calls < 1:
            raise ValueError("gate_full_calls must be >= 1")
        durations = (self.open_duration_s, self.slow_call_threshold_s,
                     self.quota_default_cooldown_s, self.probe_timeout_s)
        if min(durations) <= 0:
            raise ValueError("durations must be positive")

    @classmethod
    def for_baseline(cls, baseline_latency_s: float, **overrides: Any) -> BreakerPolicy:
        """The default policy for a model whose normal latency is ``baseline_latency_s``:
        a call is slow when it takes more than twice that."""
        return replace(cls(slow_call_threshold_s=2.0 * baseline_latency_s), **overrides)

    @property
    def slow_trips(self) -> bool:
        """Whether the slow-call rate can open the breaker at all (threshold below 100 %)."""
        return self.slow_call_rate_threshold < 1.0
