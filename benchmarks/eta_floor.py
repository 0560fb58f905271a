"""How close can an ETA-to-start get on the steady heavy load? A floor, measured in simulation.

``benchmarks.eta_accuracy`` scores each job's ETA at submit time against when it really started.
Part of any miss is no estimator's fault: which slot frees next depends on calls not finished yet.
This script measures that part. It simulates the steady-load workload of
``benchmarks.eta_accuracy`` as a pure queue (8 slots, Poisson arrivals at 0.9 utilisation, each
job served by the first model of its route or, a given share of the time, by the second; lognormal
latencies at the simulator's peak-hours medians x 0.1) and asks ``scheduler.eta.forecast`` for
each arriving job's ETA, given everything: the true latency distributions and share, each running
job's model and elapsed time, the exact queue, no snapshot age, no dispatch delay. Gradio's
estimator runs on the same jobs. Scored as in ``benchmarks.eta_accuracy``: jobs that waited at
least 0.5 s, error in % of the wait.

    python -m benchmarks.eta_floor            # a few seconds
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics
from dataclasses import dataclass

from benchmarks.gradio import gradio_estimate
from scheduler.eta.forecast import (
    LatencyModel,
    ModelEstimate,
    RunningJob,
    forecast,
)

SLOTS = 8
MIN_WAIT_S = 0.5
FIRST = ("first", LatencyModel.from_median(1.2, 0.35))  # gemini-3-pro-image-preview x 0.1
SECOND = ("second", LatencyModel.from_median(0.6, 0.3))  # gemini-2.5-flash-image x 0.1


@dataclass(frozen=True)
class Job:
    arrival_s: float
    model_index: int
    service_s: float
    start_s: float = 0.0


def simulate(second_share: float, jobs: int, seed: int) -> list[Job]:
    """A FIFO queue on SLOTS slots; returns the jobs with their start times."""
    rng = random.Random(seed)
    latencies = (FIRST[1], SECOND[1])
    mean_s = ((1 - second_share) * latencies[0].mean_s + second_share * latencies[1].mean_s)
    rate_per_s = 0.9 * SLOTS / mean_s
    free_at_s = [0.0] * SLOTS
    done: list[Job] = []
    clock_s = 0.0
    for _ in range(jobs):
        clock_s += rng.expovariate(rate_per_s)
        index = 1 if rng.random() < second_share else 0
        service_s = latencies[index].sample(rng)
        start_s = max(clock_s, free_at_s[0])
        heapq.heapreplace(free_at_s, start_s + service_s)
        done.append(Job(clock_s, index, service_s, start_s))
    return done


def score(jobs: list[Job], second_share: float, warm_up: int = 100) -> tuple[list[float], list[float]]:
    """Percent errors of the forecast and of Gradio's estimate for jobs that waited."""
    models = {FIRST[0]: ModelEstimate(FIRST[0], FIRST[1], second_share, 0.0),
              SECOND[0]: ModelEstimate(SECOND[0], SECOND[1], 0.0, 0.0)}
    route = (FIRST[0], SECOND[0])
    ours: list[float] = []
    gradio: list[float] = []
    for i, job in enumerate(jobs[warm_up:], start=warm_up):
        wait_s = job.start_s - job.arrival_s
        if wait_s < MIN_WAIT_S:
            continue
        now_s = job.arrival_s
        recent = jobs[max(0, i - 400):i]
        running = [RunningJob(now_s - j.start_s, route, j.model_index) for j in recent
                   if j.start_s <= now_s < j.start_s + j.service_s]
        ahead = sum(1 for j in recent if j.start_s > now_s)
        curve = forecast(SLOTS, running, route, models, exact_positions=ahead + 1, seed=i)
        ours.append(100.0 * abs(curve.at(ahead)[0] - wait_s) / wait_s)
        finished = [j.service_s for j in recent if j.start_s + j.service_s <= now_s]
        mean_s = statistics.fmean(finished)
        slot_free_s = (max(0.0, mean_s - max(r.elapsed_s for r in running))
                       if len(running) >= SLOTS else 0.0)
        gradio_start_s, _ = gradio_estimate(ahead, SLOTS, mean_s, slot_free_s)
        gradio.append(100.0 * abs(gradio_start_s - wait_s) / wait_s)
    return ours, gradio


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6000, help="jobs per simulated run")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{SLOTS} slots, utilisation 0.9, start scored for waits >= {MIN_WAIT_S}s; "
          f"{FIRST[0]}: median {FIRST[1].median_s}s sigma {FIRST[1].sigma}, {SECOND[0]}: median "
          f"{SECOND[1].median_s}s sigma {SECOND[1].sigma}\n")
    print(f"{'share on second':>15} {'scored':>7} | {'forecast, all known':>21} | "
          f"{'gradio':>17}")
    print(f"{'':>15} {'':>7} | {'median':>10} {'p90':>10} | {'median':>8} {'p90':>8}")
    for share in (0.0, 0.5, 1.0):
        ours: list[float] = []
        gradio: list[float] = []
        for seed in range(args.seeds):
            found = score(simulate(share, args.jobs, seed), share)
            ours += found[0]
            gradio += found[1]
        print(f"{share:>15.1f} {len(ours):>7} | {statistics.median(ours):>9.1f}% "
              f"{quantile(ours, 0.9):>9.1f}% | {statistics.median(gradio):>7.1f}% "
              f"{quantile(gradio, 0.9):>7.1f}%")


if __name__ == "__main__":
    main()
