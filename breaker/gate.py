"""The slow-start gate and hang detection: the rules on calls in flight (pure, no clock).

A model whose breaker window holds fewer than ``minimum_calls`` outcomes (a cold start, an idle
spell, a Redis loss, right after half-open -> closed) has no evidence either way: the gate lets at
most ``minimum_calls`` calls be in flight across the cluster, less one per failure in the window,
so a model dead from the start costs ``minimum_calls`` calls (then its breaker opens), not one
per worker thread. Each success widens the gate by one (doubling per round
trip, like TCP slow start), each failure narrows it by one (never below ``minimum_calls``); at
``gate_full_calls`` it stops limiting. While the window holds fewer than ``minimum_calls``
outcomes the width is capped at ``minimum_calls`` plus the outcomes it does hold, so an idle spell
starts over.

Calls in flight are ``(call_id, started_ms)``; one older than ``probe_timeout_s`` (the model's
timeout plus a margin) is dropped, so a killed worker's call cannot hold the gate forever (the
scheduler frees it sooner, when its job's lease runs out: ``release_calls``). A call
running past ``slow_call_threshold_s`` is a slow signal while it still runs: the model is
*hanging* when such a call exists and no success was recorded since it became slow. A hanging
model admits no new call (the router moves on at once), and its gate narrows to its minimum.

``breaker/lua/common.lua`` implements the same rules (the property test holds them equal).
"""

from __future__ import annotations

from dataclasses import replace

from breaker.policy import BreakerPolicy, to_ms
from breaker.state import MachineState

InFlight = tuple[tuple[str, int], ...]


def live(in_flight: InFlight, policy: BreakerPolicy, now_ms: int) -> InFlight:
    """The calls still counted: those started no longer than the probe timeout ago."""
    horizon = now_ms - to_ms(policy.probe_timeout_s)
    return tuple(entry for entry in in_flight if entry[1] >= horizon)


def slow_running(in_flight: InFlight, policy: BreakerPolicy, now_ms: int) -> InFlight:
    """The calls running longer than the slow-call threshold."""
    since = now_ms - to_ms(policy.slow_call_threshold_s)
    return tuple(entry for entry in in_flight if entry[1] < since)


def hanging(state: MachineState, policy: BreakerPolicy, now_ms: int) -> bool:
    """Some call runs slow and no success came since the newest such call became slow."""
    if not policy.gate:
        return False
    slow = slow_running(live(state.in_flight, policy, now_ms), policy, now_ms)
    if not slow:
        return False
    newest_start = max(started for _, started in slow)
    return state.last_success_ms < newest_start + to_ms(policy.slow_call_threshold_s)


def limit(in_window: MachineState, policy: BreakerPolicy) -> int | None:
    """How many calls may be in flight (None: the gate does not limit). ``in_window`` is the
    state with its window trimmed to now."""
    if not policy.gate:
        return None
    if in_window.calls < policy.minimum_calls:
        return policy.minimum_calls - in_window.failures
    width = max(in_window.gate_limit, policy.minimum_calls)
    return None if width >= policy.gate_full_calls else width


def admit(state: MachineState, call_id: str | None, now_ms: int) -> MachineState:
    """Count an admitted call as in flight (a call without an id is not tracked)."""
    if call_id is None:
        return state
    entries = tuple(e for e in state.in_flight if e[0] != call_id) + ((call_id, now_ms),)
    return replace(state, in_flight=tuple(sorted(entries, key=lambda e: (e[1], e[0]))))


def release(state: MachineState, call_id: str | None) -> MachineState:
    if call_id is None or all(e[0] != call_id for e in state.in_flight):
        return state
    return replace(state, in_flight=tuple(e for e in state.in_flight if e[0] != call_id))


def after_outcome(state: MachineState, policy: BreakerPolicy, succeeded: bool) -> MachineState:
    """Widen (success) or narrow (failure) the gate; ``state``'s window already counts it."""
    width = max(state.gate_limit, policy.minimum_calls)
    width = width + 1 if succeeded else max(policy.minimum_calls, width - 1)
    if state.calls <= policy.minimum_calls:
        width = min(width, policy.minimum_calls + state.calls)
    return replace(state, gate_limit=min(width, policy.gate_full_calls))
