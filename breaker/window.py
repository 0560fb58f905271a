"""The time-based sliding window: one-second buckets with running totals (as resilience4j's
SlidingTimeWindowMetrics). Only buckets whose second lies in the last ``window_s`` seconds count.
"""

from __future__ import annotations

from dataclasses import replace

from breaker.state import Bucket, MachineState


def first_second_in_window(now_ms: int, window_s: int) -> int:
    """The oldest second still inside a window of ``window_s`` seconds ending now."""
    return now_ms // 1000 - window_s + 1


def trim(state: MachineState, window_s: int, now_ms: int) -> MachineState:
    """Drop the buckets that have left the window, subtracting them from the running totals."""
    oldest = first_second_in_window(now_ms, window_s)
    expired = [b for b in state.buckets if b.second < oldest]
    if not expired:
        return state
    return replace(
        state,
        buckets=tuple(b for b in state.buckets if b.second >= oldest),
        calls=state.calls - sum(b.calls for b in expired),
        failures=state.failures - sum(b.failures for b in expired),
        slow=state.slow - sum(b.slow for b in expired),
    )


def add_call(state: MachineState, now_ms: int, failed: bool, slow: bool) -> MachineState:
    """Count one call in the current second's bucket (call ``trim`` first)."""
    second = now_ms // 1000
    failures, slow_calls = int(failed), int(slow)
    last = state.buckets[-1] if state.buckets else None
    if last is not None and last.second == second:
        bucket = Bucket(second, last.calls + 1, last.failures + failures, last.slow + slow_calls)
        buckets = (*state.buckets[:-1], bucket)
    else:
        buckets = (*state.buckets, Bucket(second, 1, failures, slow_calls))
    return replace(
        state,
        buckets=buckets,
        calls=state.calls + 1,
        failures=state.failures + failures,
        slow=state.slow + slow_calls,
    )


def fresh(state: MachineState) -> MachineState:
    """The same state with an empty window."""
    return replace(state, buckets=(), calls=0, failures=0, slow=0)
