"""What the status page, metrics and the router's ETA read: a model's health at a moment."""

from __future__ import annotations

from dataclasses import dataclass

from breaker import gate, window
from breaker.policy import BreakerPolicy
from breaker.state import BreakerState, Colour, MachineState

SLOW_RATE_FOR_YELLOW = 0.5
"""Share of slow calls that marks a closed breaker yellow: a stand-in for "p50 over the slow
threshold (2x baseline)", since half the calls being slower means the median is."""


@dataclass(frozen=True)
class ModelHealth:
    model: str
    state: BreakerState
    colour: Colour
    calls: int
    failures: int
    slow: int
    failure_rate: float
    open_until_ms: int | None
    cooldown_until_ms: int | None
    misconfigured_reason: str | None
    override_reason: str | None
    probes_admitted: int
    gate_limit: int | None = None
    """Calls the slow-start gate lets be in flight now; None when it does not limit."""
    in_flight: int = 0
    slow_running: int = 0
    """Calls in flight running longer than the slow-call threshold."""
    hanging: bool = False
    """Slow calls run unanswered: new calls go to the next model (``breaker.gate``)."""

    @property
    def serving(self) -> bool:
        """Whether the breaker lets this model take calls now; red is exactly "not serving"."""
        return self.colour is not Colour.RED


def effective_state(state: MachineState, now_ms: int) -> BreakerState:
    """The stored state, except an open breaker whose open period is over reads as half-open
    (it becomes half-open on the next ``allow``)."""
    if state.mode is BreakerState.OPEN and now_ms >= state.open_until_ms:
        return BreakerState.HALF_OPEN
    return state.mode


def colour(state: MachineState, policy: BreakerPolicy, now_ms: int) -> Colour:
    current = effective_state(state, now_ms)
    if current is BreakerState.DISABLED:
        return Colour.GREEN
    red_states = (BreakerState.OPEN, BreakerState.FORCED_OPEN)
    if current in red_states or state.misconfigured_reason or state.cooldown_until_ms > now_ms:
        return Colour.RED
    if current is BreakerState.HALF_OPEN:
        return Colour.YELLOW
    if current is BreakerState.CLOSED and gate.hanging(state, policy, now_ms):
        return Colour.YELLOW
    in_window = window.trim(state, policy.window_s, now_ms)
    slow_share = in_window.slow / in_window.calls if in_window.calls else 0.0
    if in_window.calls >= policy.minimum_calls and slow_share >= SLOW_RATE_FOR_YELLOW:
        return Colour.YELLOW
    return Colour.GREEN


def health(model: str, state: MachineState, policy: BreakerPolicy, now_ms: int) -> ModelHealth:
    current = effective_state(state, now_ms)
    in_window = window.trim(state, policy.window_s, now_ms)
    probes = state.probes_admitted if state.mode is BreakerState.HALF_OPEN else 0
    running = gate.live(state.in_flight, policy, now_ms) if policy.gate else ()
    hangs = current is BreakerState.CLOSED and gate.hanging(state, policy, now_ms)
    gate_limit = None
    if current is BreakerState.CLOSED:
        gate_limit = policy.minimum_calls if hangs else gate.limit(in_window, policy)
    return ModelHealth(
        model=model,
        state=current,
        colour=colour(state, policy, now_ms),
        calls=in_window.calls,
        failures=in_window.failures,
        slow=in_window.slow,
        failure_rate=in_window.failures / in_window.calls if in_window.calls else 0.0,
        open_until_ms=state.open_until_ms if current is BreakerState.OPEN else None,
        cooldown_until_ms=state.cooldown_until_ms if state.cooldown_until_ms > now_ms else None,
        misconfigured_reason=state.misconfigured_reason or None,
        override_reason=state.override_reason or None,
        probes_admitted=probes,
        gate_limit=gate_limit,
        in_flight=len(running),
        slow_running=len(gate.slow_running(running, policy, now_ms)),
        hanging=hangs,
    )
