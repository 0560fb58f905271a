"""Vendor limits in the ETA forward simulation, applied the way the workers apply them.

A model takes at most ``calls_per_window`` call starts in any ``window_s`` (a sliding log, seeded
with the calls already started) and ``max_concurrency`` calls in flight. An attempt that would wait
longer than ``slot_wait_s`` for a rate token skips the model at once; one that finds the cap full
skips it after ``slot_wait_s`` (see ``workers.admission``).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Mapping

from scheduler.eta.model import ModelEstimate, Route, VendorLimit


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




# One model of a route, flattened for the hot loop: (index of its LimitState or -1,
# failure_rate, failure_latency_s, mu, sigma). Models the router skips are left out.
LimitedStep = tuple[int, float, float, float, float]


def limited_plan(route: Route, models: Mapping[str, ModelEstimate],
                 limit_index: Mapping[str, int]) -> tuple[LimitedStep, ...]:
    """The route's steps for ``walk_limited``; ``limit_index`` numbers the models with limits."""
    return tuple(
        (limit_index.get(name, -1), e.failure_rate, e.failure_latency_s,
         e.success_latency.mu, e.success_latency.sigma)
        for name in route if not (e := models[name]).skipped)


def walk_limited(plan: tuple[LimitedStep, ...], at_s: float, limits: list[LimitState],
                 rng: random.Random) -> float:
    """When a job that starts its route at ``at_s`` leaves its slot (before overhead)."""
    for index, failure_rate, failure_latency_s, mu, sigma in plan:
        state = limits[index] if index >= 0 else None
        if state is not None:
            admitted, at_s = state.admit(at_s)
            if not admitted:
                continue
        failed = failure_rate > 0.0 and rng.random() < failure_rate
        if failed:
            call_s = failure_latency_s
        elif sigma == 0.0:
            call_s = math.exp(mu)
        else:
            call_s = math.exp(mu + sigma * rng.gauss(0.0, 1.0))
        if state is not None:
            heapq.heappush(state.in_flight_ends_s, at_s + call_s)
        at_s += call_s
        if not failed:
            return at_s
    return at_s
