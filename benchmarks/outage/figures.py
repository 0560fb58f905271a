"""The figures of an outage run, from the jobs' records and the simulator's call log: latency
percentiles, calls in a window, the time back to the first model after an outage, slot-seconds
spent waiting on a hanging model, and the time until a burst reaches full concurrency."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Call = dict[str, Any]  # a row of the simulator's call log (GET /_sim/calls)


@dataclass(frozen=True)
class JobRecord:
    """One job as a design saw it: submitted at ``submit_s`` (epoch seconds), ended after
    ``latency_s`` (None: did not end), succeeded or not, served by which model id."""

    submit_s: float
    latency_s: float | None
    ok: bool
    served_by: str | None


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latencies(jobs: Sequence[JobRecord]) -> list[float]:
    return [j.latency_s for j in jobs if j.ok and j.latency_s is not None]


def calls_started_between(calls: Sequence[Call], start_s: float, end_s: float) -> int:
    return sum(start_s <= c["started_at"] < end_s for c in calls)


def recovery_s(jobs: Sequence[JobRecord], recovered_at_s: float, model: str,
               bucket_s: float = 1.0, share: float = 0.9) -> float | None:
    """Seconds from ``recovered_at_s`` until ``model`` serves at least ``share`` of the jobs
    submitted in every ``bucket_s`` bucket from then on (buckets by submit time); None if the
    last bucket does not reach it."""
    buckets: dict[int, list[bool]] = {}
    for job in jobs:
        if job.submit_s >= recovered_at_s:
            index = int((job.submit_s - recovered_at_s) // bucket_s)
            buckets.setdefault(index, []).append(job.served_by == model)
    first: int | None = None
    for index in sorted(buckets):
        reached = sum(buckets[index]) >= share * len(buckets[index])
        first = (index if first is None else first) if reached else None
    return None if first is None else first * bucket_s


def slot_seconds(calls: Sequence[Call], now_s: float) -> float:
    """The time the calls held a caller's slot: finish (or ``now_s``, still open) less start."""
    return float(sum((c["finished_at"] if c["finished_at"] is not None else now_s)
                     - c["started_at"] for c in calls))


def time_to_concurrency(calls: Sequence[Call], target: int) -> float | None:
    """Seconds from the first call's start until ``target`` calls are in flight at once at the
    simulator (None: never); a call that ends at the instant another starts is not counted
    with it."""
    events: list[tuple[float, int]] = []
    for c in calls:
        events.append((c["started_at"], 1))
        if c["finished_at"] is not None:
            events.append((c["finished_at"], -1))
    events.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    in_flight = 0
    for at_s, step in events:
        in_flight += step
        if in_flight >= target:
            return at_s - events[0][0]
    return None


def peak_concurrency(calls: Sequence[Call]) -> int:
    """The most calls in flight at once at the simulator."""
    events = sorted([(c["started_at"], 1) for c in calls]
                    + [(c["finished_at"], -1) for c in calls if c["finished_at"] is not None])
    in_flight = peak = 0
    for _, step in events:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


def median_call_s(calls: Sequence[Call]) -> float:
    """The median duration of the calls that answered 200."""
    durations = sorted(c["finished_at"] - c["started_at"] for c in calls
                       if c["http_status"] == 200 and c["finished_at"] is not None)
    return durations[len(durations) // 2] if durations else math.nan
