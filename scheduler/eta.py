"""Queue ETA: a model-aware forward simulation of the worker slots, and Gradio's estimator.

Two estimators live here. ``gradio_estimate`` is Gradio's: a running mean of service time, and
start = time until a slot frees + rank x mean / slots. It is kept as the comparison row of the ETA
benchmark. ``forecast`` is the one we publish. A job's service time is not one number: it walks its
route, and while a model is overloaded most calls to it fail fast (a 503 in a second or two) and the
job moves on to the next model, whose latency may be very different. A running mean lags every such
change (Gradio's estimate is off by up to 40 % during failover), so ``forecast`` draws each job's
service time from its route (each model's current failure rate from the breaker window, its recent
latency distribution), starts the slots from the running jobs' remaining times conditioned on how
long they have already run, and simulates the queue forward, averaging over seeded Monte Carlo runs.

Modelling choices:

* A failed attempt costs ``failure_latency_s`` exactly, and the job moves to the next model. An
  open breaker (the router skips the model) is a failure rate of 1.0 with a failure latency of 0.
* A failure on the last model of a route ends the job's stay in its slot: the router parks it back
  in the waiting index, so the slot frees after ``failure_latency_s``. Its later retry is not
  modelled.
* ``RunningJob.elapsed_s`` is the age of the *current* attempt; what is left is the rest of that
  attempt, plus the remaining models of the route if it fails.
* Jobs take the earliest free slot in queue order. More running jobs than slots (capacity just
  shrank) queue ahead of the waiting jobs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.eta_curve import EtaCurve
from scheduler.eta_latency import LatencyModel, fit_lognormal

__all__ = [
    "EtaCurve",
    "LatencyModel",
    "ModelEstimate",
    "RunningJob",
    "expected_service_s",
    "fit_lognormal",
    "forecast",
    "gradio_estimate",
]

Route = tuple[str, ...]

# Per-model figures flattened for the hot loop: (failure_rate, failure_latency_s, mu, sigma).
_Step = tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    """What the simulation knows of one model right now."""

    model: str
    success_latency: LatencyModel
    failure_rate: float
    failure_latency_s: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"{self.model}: failure_rate {self.failure_rate} is not in [0, 1]")
        if self.failure_latency_s < 0.0:
            raise ValueError(f"{self.model}: failure_latency_s must be >= 0")

    @property
    def mean_attempt_s(self) -> float:
        """Expected duration of one attempt, failed or not."""
        f = self.failure_rate
        return f * self.failure_latency_s + (1.0 - f) * self.success_latency.mean_s


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job in a worker slot, ``elapsed_s`` into its attempt on ``route[model_index]``."""

    elapsed_s: float
    route: Route
    model_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.model_index < len(self.route):
            raise ValueError(f"model_index {self.model_index} outside route {self.route}")
        if self.elapsed_s < 0.0:
            raise ValueError(f"elapsed_s must be >= 0, got {self.elapsed_s}")


def expected_service_s(route: Route, models: Mapping[str, ModelEstimate]) -> float:
    """Mean slot time of a fresh job on ``route``: the attempts weighted by reaching them."""
    _check_route(route, models)
    total_s = 0.0
    reach_probability = 1.0
    for name in route:
        estimate = models[name]
        total_s += reach_probability * estimate.mean_attempt_s
        reach_probability *= estimate.failure_rate
    return total_s


def forecast(
    slots: int,
    running: Sequence[RunningJob],
    waiting_routes: Sequence[Route] | Route,
    models: Mapping[str, ModelEstimate],
    *,
    exact_positions: int = 200,
    runs: int = 64,
    seed: int = 0,
    queue_depth: int | None = None,
    job_overhead_s: float = 0.0,
) -> EtaCurve:
    """Expected start and finish of queue positions 0..exact_positions-1, by simulation.

    ``waiting_routes`` is one route for every position, or the routes of the first positions in
    queue order; positions past the given ones repeat that mix. Beyond ``exact_positions`` the
    curve extends linearly at the mix's throughput (slots / mean service), so the cost is
    O(len(running) + exact_positions) per run whatever the depth. ``slots == 0`` gives a curve that
    answers ``math.inf``. ``queue_depth`` (default: the number of per-position routes given, else
    unknown) is where a new job joins, for ``EtaCurve.for_new_job``. Times are rounded to the ms.

    ``job_overhead_s`` is slot time a job holds beyond its vendor calls (loading, storing images,
    handing the slot to the next job), as measured: each waiting job's service grows by it, each
    running job's remainder by half of it (where it is in its overhead is not known).
    """
    if slots < 0 or exact_positions < 1 or runs < 1 or job_overhead_s < 0.0:
        raise ValueError("need slots >= 0, exact_positions >= 1, runs >= 1, job_overhead_s >= 0")
    routes, single_route = _route_list(waiting_routes)
    if queue_depth is None and not single_route:
        queue_depth = len(routes)
    for job in running:
        _check_route(job.route, models)
    mean_service_s = job_overhead_s + (
        math.fsum(expected_service_s(r, models) for r in routes) / len(routes))
    if slots == 0:
        return EtaCurve(0, mean_service_s, (), (), queue_depth)

    plans = {route: _plan(route, models) for route in set(routes)}
    position_plans = [plans[routes[p % len(routes)]] for p in range(exact_positions)]
    rng = random.Random(seed)
    start_runs: list[list[float]] = []
    finish_runs: list[list[float]] = []
    for _ in range(runs):
        free_at_s = [0.0] * slots  # a heap of the times each slot frees up
        for job in running:
            remaining_s = _sample_remaining(job, models, rng) + 0.5 * job_overhead_s
            heapq.heapreplace(free_at_s, free_at_s[0] + remaining_s)
        starts, finishes = _simulate_queue(free_at_s, position_plans, rng, job_overhead_s)
        start_runs.append(starts)
        finish_runs.append(finishes)
    return EtaCurve(
        slots=slots,
        mean_service_s=mean_service_s,
        start_s=_column_means_ms(start_runs, runs),
        finish_s=_column_means_ms(finish_runs, runs),
        queue_depth=queue_depth,
    )


def gradio_estimate(
    position: int, slots: int, mean_service_s: float, time_until_slot_free_s: float
) -> tuple[float, float]:
    """Gradio's estimate of (start_s, finish_s): the next free slot, then rank x mean / slots.

    Blind to routes and failure rates; the benchmark's baseline. No slots: ``(inf, inf)``.
    """
    if slots <= 0:
        return math.inf, math.inf
    start_s = time_until_slot_free_s + position * mean_service_s / slots
    return start_s, start_s + mean_service_s


def _simulate_queue(
    free_at_s: list[float],
    position_plans: Sequence[tuple[_Step, ...]],
    rng: random.Random,
    job_overhead_s: float = 0.0,
) -> tuple[list[float], list[float]]:
    heapreplace = heapq.heapreplace
    starts: list[float] = []
    finishes: list[float] = []
    for plan in position_plans:
        start_s = free_at_s[0]
        finish_s = start_s + job_overhead_s + _sample_service(plan, rng)
        heapreplace(free_at_s, finish_s)
        starts.append(start_s)
        finishes.append(finish_s)
    return starts, finishes


def _sample_remaining(
    job: RunningJob, models: Mapping[str, ModelEstimate], rng: random.Random
) -> float:
    """Slot time left for a running job: the rest of this attempt, then the route's remainder."""
    current = models[job.route[job.model_index]]
    elapsed_s = job.elapsed_s
    # Failures are fast and fixed-length: past failure_latency_s this attempt cannot be one.
    can_still_fail = current.failure_rate > 0.0 and elapsed_s < current.failure_latency_s
    if can_still_fail:
        fail_weight = current.failure_rate
        success_weight = (1.0 - current.failure_rate) * current.success_latency.survival(elapsed_s)
        if rng.random() * (fail_weight + success_weight) < fail_weight:
            rest_s = _sample_service(_plan(job.route[job.model_index + 1 :], models), rng)
            return current.failure_latency_s - elapsed_s + rest_s
    return current.success_latency.sample_remaining(elapsed_s, rng)


def _sample_service(plan: tuple[_Step, ...], rng: random.Random) -> float:
    service_s = 0.0
    for failure_rate, failure_latency_s, mu, sigma in plan:
        if failure_rate and rng.random() < failure_rate:
            service_s += failure_latency_s
            continue
        return service_s + math.exp(mu + sigma * rng.gauss(0.0, 1.0))
    return service_s


def _plan(route: Route, models: Mapping[str, ModelEstimate]) -> tuple[_Step, ...]:
    steps = (models[name] for name in route)
    return tuple(
        (e.failure_rate, e.failure_latency_s, e.success_latency.mu, e.success_latency.sigma)
        for e in steps
    )


def _route_list(waiting_routes: Sequence[Route] | Route) -> tuple[list[Route], bool]:
    """The routes as a list, and whether one route was given for every position."""
    if not waiting_routes:
        raise ValueError("give at least one route (for an empty queue: the route a new job takes)")
    if isinstance(waiting_routes[0], str):
        return [tuple(str(name) for name in waiting_routes)], True
    return [tuple(route) for route in waiting_routes], False


def _check_route(route: Route, models: Mapping[str, ModelEstimate]) -> None:
    if not route:
        raise ValueError("a route needs at least one model")
    unknown = [name for name in route if name not in models]
    if unknown:
        raise ValueError(f"no estimate for model(s) {unknown} on route {route}")


def _column_means_ms(rows: list[list[float]], runs: int) -> tuple[float, ...]:
    """Mean of each position over the runs, rounded to the millisecond the curve publishes."""
    columns = zip(*rows, strict=True)
    return tuple(round(math.fsum(column) / runs * 1000.0) / 1000.0 for column in columns)
