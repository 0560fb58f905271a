"""Vendor limits in the ETA forward simulation, applied the way the workers apply them.

A model takes at most ``calls_per_window`` call starts in any ``window_s`` (a sliding log, seeded
with the calls already started) and ``max_concurrency`` calls in flight. An attempt that would wait
longer than ``slot_wait_s`` for a rate token skips the model at once; one that finds the cap full
skips it after ``slot_wait_s`` (see ``workers.admission``).
"""

from __future__ import annotations

import bisect
import heapq
import random
from collections.abc import Mapping

from scheduler.eta_model import ModelEstimate, Route, VendorLimit


class LimitState:
    """One run's view of a model's vendor limits: the sliding log of call starts, calls in flight."""

    __slots__ = ("limit", "starts_s", "in_flight_ends_s")

    def __init__(self, limit: VendorLimit) -> None:
        self.limit = limit
        self.starts_s = sorted(t for t in limit.recent_starts_s if t > -limit.window_s)
        self.in_flight_ends_s: list[float] = []

    def admit(self, at_s: float) -> tuple[bool, float]:
        """(admitted, when): the call's start after any wait, or when the model was given up."""
        limit = self.limit
        ends = self.in_flight_ends_s
        while ends and ends[0] <= at_s:
            heapq.heappop(ends)
        if len(ends) >= limit.max_concurrency:
            if ends[0] - at_s > limit.slot_wait_s:
                return False, at_s + limit.slot_wait_s
            at_s = heapq.heappop(ends)
        starts = self.starts_s
        cut = bisect.bisect_right(starts, at_s - limit.window_s)
        if cut:
            del starts[:cut]
        # Calls simulated after ``at_s`` count too: jobs are walked in start order, not call order.
        in_window = len(starts)
        if in_window >= limit.calls_per_window:
            # The call may start when enough of the window's calls have aged out of it.
            ready_s = starts[in_window - limit.calls_per_window] + limit.window_s
            if ready_s - at_s > limit.slot_wait_s:
                return False, at_s
            at_s = ready_s
        bisect.insort(starts, at_s)
        return True, at_s

    def called(self, end_s: float) -> None:
        heapq.heappush(self.in_flight_ends_s, end_s)




def walk_limited(route: Route, at_s: float, models: Mapping[str, ModelEstimate],
                  limits: Mapping[str, LimitState], rng: random.Random) -> float:
    """When a job that starts its route at ``at_s`` leaves its slot (before overhead)."""
    for name in route:
        estimate = models[name]
        if estimate.skipped:
            continue
        state = limits.get(name)
        if state is not None:
            admitted, at_s = state.admit(at_s)
            if not admitted:
                continue
        failed = estimate.failure_rate > 0.0 and rng.random() < estimate.failure_rate
        call_s = (estimate.failure_latency_s if failed
                  else estimate.success_latency.sample(rng))
        if state is not None:
            state.called(at_s + call_s)
        at_s += call_s
        if not failed:
            return at_s
    return at_s
