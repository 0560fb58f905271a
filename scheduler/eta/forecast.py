"""Queue ETA: a model-aware forward simulation of the worker slots.

A job's service time is not one number: it walks its route, and while a model is overloaded most
calls to it fail fast (a 503 in a second or two) and the job moves on to the next model, whose
latency may be very different. A running mean of service time lags every such change (Gradio's
estimator, the ETA benchmarks' comparison row, is off by up to 40 % during failover), so
``forecast`` draws each job's service time from its route (each model's current failure rate from
the breaker window, its recent latency distribution), starts the slots from the running jobs'
remaining times conditioned on how long they have already run, and simulates the queue forward
over seeded Monte Carlo runs. Each position's ETA is the mean of the middle half of its runs (the
interquartile mean): a job's own service time is right-skewed, so the plain mean promises jobs
near the front of the queue a little too late (the typical miss is smallest near the median),
while a plain median would jump from one mode to the other of a route that half the time fails
over fast.

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
* Vendor limits (``VendorLimit``) are simulated as the workers enforce them (``eta_limits``).
  Without this, a burst is forecast as if every job got the first model of its route, while most
  are sent on to the next one when the first's rate budget is spent.
  Running jobs' later attempts ignore the limits; jobs dispatched but not yet calling go
  through them like waiting jobs.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence

from scheduler.eta.curve import EtaCurve
from scheduler.eta.latency import LatencyModel, fit_lognormal
from scheduler.eta.limits import LimitState, limited_plan, walk_limited
from scheduler.eta.model import (
    ModelEstimate,
    Route,
    RunningJob,
    VendorLimit,
    check_route,
    expected_service_s,
)

# Per-model figures flattened for the hot loop: (failure_rate, failure_latency_s, mu, sigma).
_Step = tuple[float, float, float, float]

__all__ = [
    "EtaCurve",
    "LatencyModel",
    "ModelEstimate",
    "RunningJob",
    "VendorLimit",
    "expected_service_s",
    "fit_lognormal",
    "forecast",
]


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
    dispatched: Sequence[Route] = (),
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

    ``dispatched`` are the routes of jobs handed to workers that have not called a vendor yet,
    in dispatch order: they take slots before the waiting jobs and walk their whole route (vendor
    limits included); their (start, finish) are the curve's ``dispatched_s``.
    """
    if slots < 0 or exact_positions < 1 or runs < 1 or job_overhead_s < 0.0:
        raise ValueError("need slots >= 0, exact_positions >= 1, runs >= 1, job_overhead_s >= 0")
    routes, single_route = _route_list(waiting_routes)
    if queue_depth is None and not single_route:
        queue_depth = len(routes)
    for route in (*(job.route for job in running), *dispatched):
        check_route(route, models)
    mean_service_s = job_overhead_s + (
        math.fsum(expected_service_s(r, models) for r in routes) / len(routes))
    if slots == 0:
        return EtaCurve(0, mean_service_s, (), (), queue_depth)

    # Dispatched jobs are simulated as the positions in front of position 0.
    ahead = len(dispatched)
    position_routes = [tuple(r) for r in dispatched]
    position_routes += [routes[p % len(routes)] for p in range(exact_positions)]
    limited = any(models[m].limit is not None for route in set(position_routes) for m in route)
    start_runs, finish_runs = _simulate(slots, running, position_routes, models, runs, seed,
                                        job_overhead_s, limited)
    if limited:
        # The tail grows at the simulated slot time per job over the second half of the exact
        # positions, by when the limits have shaped the mix of models that serve the queue.
        tail_from = ahead + (len(position_routes) - ahead) // 2
        slot_s = [f - s for starts, finishes in zip(start_runs, finish_runs, strict=True)
                  for s, f in zip(starts[tail_from:], finishes[tail_from:], strict=True)]
        mean_service_s = math.fsum(slot_s) / len(slot_s)
    return _curve(slots, mean_service_s, start_runs, finish_runs, ahead, queue_depth)


def _curve(slots: int, mean_service_s: float, start_runs: list[list[float]],
           finish_runs: list[list[float]], ahead: int, queue_depth: int | None) -> EtaCurve:
    """The curve from the simulated runs; the first ``ahead`` columns are dispatched jobs."""
    starts = _column_midmeans_ms(start_runs)
    finishes = _column_midmeans_ms(finish_runs)
    return EtaCurve(
        slots=slots,
        mean_service_s=mean_service_s,
        start_s=starts[ahead:],
        finish_s=finishes[ahead:],
        queue_depth=queue_depth,
        dispatched_s=tuple(zip(starts[:ahead], finishes[:ahead], strict=True)),
    )


def _simulate(
    slots: int,
    running: Sequence[RunningJob],
    position_routes: Sequence[Route],
    models: Mapping[str, ModelEstimate],
    runs: int,
    seed: int,
    job_overhead_s: float,
    limited: bool,
) -> tuple[list[list[float]], list[list[float]]]:
    """Start and finish of every position in every run. ``limited``: every attempt of a waiting
    (or dispatched) job goes through the vendor limits' admission."""
    rng = random.Random(seed)
    # Only the models a simulated attempt can reach need their limits tracked.
    reachable = {name for route in position_routes for name in route}
    reachable.update(job.route[job.model_index] for job in running)
    limited_models = ([name for name in sorted(reachable) if models[name].limit is not None]
                      if limited else [])
    limit_index = {name: i for i, name in enumerate(limited_models)}
    plans = {route: _plan(route, models) for route in set(position_routes)}
    limited_plans = {route: limited_plan(route, models, limit_index) for route in plans}
    start_runs: list[list[float]] = []
    finish_runs: list[list[float]] = []
    for _ in range(runs):
        limits = [LimitState(limit) for name in limited_models
                  if (limit := models[name].limit) is not None]
        free_at_s = [0.0] * slots  # a heap of the times each slot frees up
        for job in running:
            remaining_s = _sample_remaining(job, models, rng)
            index = limit_index.get(job.route[job.model_index], -1)
            if index >= 0:
                limits[index].called(free_at_s[0] + remaining_s)
            heapq.heapreplace(free_at_s, free_at_s[0] + remaining_s + 0.5 * job_overhead_s)
        starts: list[float] = []
        finishes: list[float] = []
        for route in position_routes:
            start_s = free_at_s[0]
            end_s = (walk_limited(limited_plans[route], start_s, limits, rng) if limited
                     else start_s + _sample_service(plans[route], rng))
            finish_s = end_s + job_overhead_s
            heapq.heapreplace(free_at_s, finish_s)
            starts.append(start_s)
            finishes.append(finish_s)
        start_runs.append(starts)
        finish_runs.append(finishes)
    return start_runs, finish_runs


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


def _column_midmeans_ms(rows: list[list[float]]) -> tuple[float, ...]:
    """Interquartile mean of each position over the runs, rounded to the published millisecond."""
    return tuple(round(_interquartile_mean(column) * 1000.0) / 1000.0
                 for column in zip(*rows, strict=True))


def _interquartile_mean(values: Sequence[float]) -> float:
    ordered = sorted(values)
    cut = len(ordered) // 4
    middle = ordered[cut:len(ordered) - cut]
    return math.fsum(middle) / len(middle)
