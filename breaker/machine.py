"""The breaker as a pure state machine: no I/O and no clock (``now_ms`` is an argument).

``allow`` and ``record`` take a state and return the next one; the stores only keep it. The Lua
scripts in ``breaker/lua`` implement exactly these rules (the property test holds them equal).
"""

from __future__ import annotations

from dataclasses import replace

from breaker import gate, window
from breaker.policy import BreakerPolicy, to_ms
from breaker.state import BreakerState, Decision, MachineState, Outcome, Reason, Transition

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def _deny(reason: Reason, retry_at_ms: int | None) -> Decision:
    return Decision(allowed=False, reason=reason.value, retry_at_ms=retry_at_ms)


def _start_probe_round(state: MachineState, policy: BreakerPolicy, now_ms: int) -> MachineState:
    return replace(
        state,
        mode=HALF_OPEN,
        probes_admitted=0,
        probe_successes=0,
        probe_round_until_ms=now_ms + to_ms(policy.probe_timeout_s),
    )


def allow(
    state: MachineState, policy: BreakerPolicy, now_ms: int, call_id: str | None = None
) -> tuple[Decision, MachineState]:
    """May a call to this model start now? Admits half-open probes up to the budget; with the
    gate on, a closed breaker admits up to the gate's limit and none while the model hangs.
    An admitted call with a ``call_id`` counts as in flight until ``record`` releases it."""
    if state.mode is BreakerState.DISABLED:
        return Decision(allowed=True, reason=Reason.DISABLED.value), state
    if state.misconfigured_reason:
        return _deny(Reason.MISCONFIGURED, None), state
    if state.mode is BreakerState.FORCED_OPEN:
        return _deny(Reason.FORCED_OPEN, None), state
    if policy.gate:
        state = replace(state, in_flight=gate.live(state.in_flight, policy, now_ms))
    if state.mode is OPEN and now_ms >= state.open_until_ms:
        state = _start_probe_round(state, policy, now_ms)
    elif state.mode is HALF_OPEN and now_ms >= state.probe_round_until_ms:
        state = _start_probe_round(state, policy, now_ms)  # the last round's probes were lost
    if state.cooldown_until_ms > now_ms:
        retry_at_ms = state.cooldown_until_ms
        if state.mode is OPEN:
            retry_at_ms = max(retry_at_ms, state.open_until_ms)
        return _deny(Reason.QUOTA_COOLDOWN, retry_at_ms), state
    if state.mode is OPEN:
        return _deny(Reason.OPEN, state.open_until_ms), state
    if state.mode is HALF_OPEN:
        if state.probes_admitted >= policy.half_open_probes:
            return _deny(Reason.HALF_OPEN_BUDGET_SPENT, state.probe_round_until_ms), state
        state = replace(state, probes_admitted=state.probes_admitted + 1)
        return Decision(allowed=True, probe=True), _track(state, policy, call_id, now_ms)
    if policy.gate:
        state = window.trim(state, policy.window_s, now_ms)
        if gate.hanging(state, policy, now_ms):
            return _deny(Reason.HANGING, None), replace(state, gate_limit=policy.minimum_calls)
        width = gate.limit(state, policy)
        if width is not None and len(state.in_flight) >= width:
            return _deny(Reason.GATE_SHUT, None), state
    return Decision(allowed=True), _track(state, policy, call_id, now_ms)


def _track(state: MachineState, policy: BreakerPolicy, call_id: str | None,
           now_ms: int) -> MachineState:
    return gate.admit(state, call_id, now_ms) if policy.gate else state


def record(
    state: MachineState,
    policy: BreakerPolicy,
    outcome: Outcome,
    latency_s: float,
    now_ms: int,
    was_probe: bool,
    *,
    retry_after_s: float | None = None,
    reason: str | None = None,
    call_id: str | None = None,
) -> tuple[MachineState, Transition | None]:
    """Apply one call's outcome; returns the next state and the transition it caused, if any.
    The call ``call_id`` is no longer in flight, whatever the outcome."""
    state = gate.release(state, call_id)
    mode = state.mode
    if mode is BreakerState.DISABLED:
        return state, None
    if outcome is Outcome.IGNORED:
        return _return_probe_slot(state, was_probe), None
    if outcome is Outcome.QUOTA:
        cooldown_s = policy.quota_default_cooldown_s if retry_after_s is None else retry_after_s
        until_ms = max(state.cooldown_until_ms, now_ms + to_ms(cooldown_s))
        state = replace(_return_probe_slot(state, was_probe), cooldown_until_ms=until_ms)
        return state, _transition(state, mode, mode, Reason.QUOTA_COOLDOWN.value, now_ms)
    if outcome is Outcome.MISCONFIGURED:
        state = replace(state, misconfigured_reason=reason or Outcome.MISCONFIGURED.value)
        return state, _transition(state, mode, mode, Reason.MISCONFIGURED.value, now_ms)
    failed = outcome is Outcome.FAILURE
    if mode is CLOSED:
        slow = to_ms(latency_s) > to_ms(policy.slow_call_threshold_s)
        state = window.add_call(window.trim(state, policy.window_s, now_ms), now_ms, failed, slow)
        if not failed:
            state = replace(state, last_success_ms=now_ms)
        if policy.gate:
            state = gate.after_outcome(state, policy, not failed)
        trip_reason = _trip_reason(state, policy)
        if trip_reason is None:
            return state, None
        return _open(state, policy, now_ms, CLOSED, trip_reason)
    if mode is HALF_OPEN and was_probe:
        if failed:
            return _open(state, policy, now_ms, HALF_OPEN, "probe_failed")
        state = replace(state, probe_successes=state.probe_successes + 1,
                        last_success_ms=now_ms)
        if state.probe_successes < policy.half_open_probes:
            return state, None
        closed = window.fresh(replace(state, mode=CLOSED, probes_admitted=0, probe_successes=0,
                                      open_until_ms=0, probe_round_until_ms=0, gate_limit=0))
        return closed, _transition(closed, HALF_OPEN, CLOSED, "probes_succeeded", now_ms)
    return state, None  # a late outcome while open/forced open says nothing new


def _trip_reason(state: MachineState, policy: BreakerPolicy) -> str | None:
    if state.calls < policy.minimum_calls:
        return None
    if state.failures / state.calls >= policy.failure_rate_threshold:
        return "failure_rate"
    if policy.slow_trips and state.slow / state.calls >= policy.slow_call_rate_threshold:
        return "slow_call_rate"
    return None


def _open(
    state: MachineState, policy: BreakerPolicy, now_ms: int, from_state: BreakerState, why: str
) -> tuple[MachineState, Transition]:
    opened = replace(state, mode=OPEN, open_until_ms=now_ms + to_ms(policy.open_duration_s),
                     probes_admitted=0, probe_successes=0, probe_round_until_ms=0)
    return opened, _transition(opened, from_state, OPEN, why, now_ms)


def _return_probe_slot(state: MachineState, was_probe: bool) -> MachineState:
    """A probe that told us nothing about health (ignored, quota) gives its slot back."""
    if was_probe and state.mode is HALF_OPEN and state.probes_admitted > 0:
        return replace(state, probes_admitted=state.probes_admitted - 1)
    return state


def _transition(
    state: MachineState, from_state: BreakerState, to_state: BreakerState, why: str, now_ms: int
) -> Transition:
    return Transition(from_state, to_state, why, state.calls, state.failures, state.slow, now_ms)


def force_open(state: MachineState, reason: str, now_ms: int) -> tuple[MachineState, Transition]:
    """Operator override: deny every call until ``reset``."""
    forced = replace(state, mode=BreakerState.FORCED_OPEN, override_reason=reason)
    return forced, _transition(forced, state.mode, forced.mode, f"forced_open: {reason}", now_ms)


def disable(state: MachineState, now_ms: int) -> tuple[MachineState, Transition]:
    """Operator override: allow every call and record nothing until ``reset``."""
    disabled = replace(state, mode=BreakerState.DISABLED, override_reason="disabled")
    return disabled, _transition(disabled, state.mode, disabled.mode, "disabled", now_ms)


def reset(state: MachineState, now_ms: int) -> tuple[MachineState, Transition]:
    """Operator reset: closed, empty window, no cooldown, misconfiguration cleared."""
    return MachineState(), _transition(MachineState(), state.mode, CLOSED, "reset", now_ms)
