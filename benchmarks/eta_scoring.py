"""Scoring for the ETA accuracy benchmark: per-job errors, Gradio's estimate replayed, the tables.

Pure functions over what the benchmark recorded.
A job's *actual* start and finish are its server timestamps minus the moment its submit returned
(same machine, same clock). ETA-to-start is scored only for jobs that waited at least
``min_wait_s``: for a job that starts at once, any error is an infinite percentage.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.gradio import gradio_estimate


@dataclass(frozen=True)
class Submitted:
    """One job as the benchmark saw it at submit time, and its server timestamps afterwards."""

    job_id: str
    submitted_s: float  # epoch seconds when the submit returned (its ETA is relative to this)
    position: int
    eta_start_s: float
    eta_finish_s: float
    started_s: float
    finished_s: float

    @property
    def actual_start_s(self) -> float:
        return max(0.0, self.started_s - self.submitted_s)

    @property
    def actual_finish_s(self) -> float:
        return max(0.0, self.finished_s - self.submitted_s)


@dataclass(frozen=True)
class Served:
    """Any job of the scenario (warm-up included): when a worker held it."""

    started_s: float
    finished_s: float


@dataclass(frozen=True)
class Errors:
    """Absolute errors (s) and errors relative to the actual value (%), start and finish."""

    start_abs_s: list[float]
    start_pct: list[float]
    finish_abs_s: list[float]
    finish_pct: list[float]


def gradio_at(job: Submitted, history: Sequence[Served], slots: int,
              fallback_mean_s: float) -> tuple[float, float]:
    """Gradio's (start, finish) for ``job``, from what was observable when its submit returned.

    mean = running mean of service time (finished_s - started_s) of the jobs finished by then
    (``fallback_mean_s`` if none); time until a slot frees = 0 if fewer than ``slots`` jobs are
    running, else max(0, mean - elapsed of the longest-running job); then
    start = that + position x mean / slots and finish = start + mean (``gradio_estimate``).
    """
    now_s = job.submitted_s
    done = [s.finished_s - s.started_s for s in history if s.finished_s <= now_s]
    mean_s = statistics.fmean(done) if done else fallback_mean_s
    running_elapsed = [now_s - s.started_s for s in history
                       if s.started_s <= now_s < s.finished_s]
    slot_free_s = 0.0
    if len(running_elapsed) >= slots:
        slot_free_s = max(0.0, mean_s - max(running_elapsed))
    return gradio_estimate(job.position, slots, mean_s, slot_free_s)


def errors(jobs: Sequence[Submitted], estimates: Sequence[tuple[float, float]],
           min_wait_s: float) -> Errors:
    """Errors of ``estimates`` (start, finish per job, in order) against what happened."""
    result = Errors([], [], [], [])
    for job, (eta_start_s, eta_finish_s) in zip(jobs, estimates, strict=True):
        if job.actual_start_s >= min_wait_s:
            miss_s = abs(eta_start_s - job.actual_start_s)
            result.start_abs_s.append(miss_s)
            result.start_pct.append(100.0 * miss_s / job.actual_start_s)
        if job.actual_finish_s > 0.0:
            miss_s = abs(eta_finish_s - job.actual_finish_s)
            result.finish_abs_s.append(miss_s)
            result.finish_pct.append(100.0 * miss_s / job.actual_finish_s)
    return result


def busy_share(served: Sequence[Served], from_s: float, to_s: float, slots: int) -> float:
    """Share of the slot-seconds between ``from_s`` and ``to_s`` that held a job: the
    utilisation the load really reached (a steady load aims at 0.9)."""
    if to_s <= from_s or slots <= 0:
        return math.nan
    held_s = math.fsum(max(0.0, min(s.finished_s, to_s) - max(s.started_s, from_s))
                       for s in served)
    return held_s / (slots * (to_s - from_s))


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


@dataclass(frozen=True)
class Row:
    name: str
    scored_start: int
    scored_finish: int
    start_median_s: float
    start_median_pct: float
    start_p90_s: float
    start_p90_pct: float
    finish_median_s: float
    finish_median_pct: float
    finish_p90_s: float
    finish_p90_pct: float


def summarise(name: str, found: Errors) -> Row:
    return Row(
        name, len(found.start_pct), len(found.finish_pct),
        quantile(found.start_abs_s, 0.5), quantile(found.start_pct, 0.5),
        quantile(found.start_abs_s, 0.9), quantile(found.start_pct, 0.9),
        quantile(found.finish_abs_s, 0.5), quantile(found.finish_pct, 0.5),
        quantile(found.finish_abs_s, 0.9), quantile(found.finish_pct, 0.9),
    )


@dataclass(frozen=True)
class Goal:
    """Upper bounds in % (None: no goal) on the model-aware row."""

    start_median_pct: float | None = None
    start_p90_pct: float | None = None
    finish_median_pct: float | None = None


BURST_GOAL = Goal(start_median_pct=5.0, start_p90_pct=15.0, finish_median_pct=10.0)
STEADY_GOAL = Goal(start_median_pct=12.0, start_p90_pct=35.0)
NO_GOAL = Goal()


def verdicts(ours: Row, gradio: Row, goal: Goal) -> list[str]:
    """One 'PASS'/'FAIL' line per goal, and the never-worse-than-Gradio check."""
    lines = []
    for label, value, bound in (
        ("start median", ours.start_median_pct, goal.start_median_pct),
        ("start p90", ours.start_p90_pct, goal.start_p90_pct),
        ("finish median", ours.finish_median_pct, goal.finish_median_pct),
    ):
        if bound is not None:
            ok = value <= bound
            lines.append(f"{'PASS' if ok else 'FAIL'}  {label} {value:.1f} % <= {bound:g} %")
    if goal != NO_GOAL:
        pairs = [("start median", ours.start_median_pct, gradio.start_median_pct),
                 ("start p90", ours.start_p90_pct, gradio.start_p90_pct),
                 ("finish median", ours.finish_median_pct, gradio.finish_median_pct),
                 ("finish p90", ours.finish_p90_pct, gradio.finish_p90_pct)]
        worse = [label for label, a, b in pairs if a > b]
        lines.append("PASS  never worse than Gradio" if not worse
                     else f"FAIL  worse than Gradio on {', '.join(worse)}")
    return lines


def table(title: str, rows: Sequence[Row], goal_lines: Sequence[str]) -> str:
    head = (f"{'estimator':<12} {'n start':>7} {'n fin':>6} | {'start med':>15} {'start p90':>15}"
            f" | {'finish med':>15} {'finish p90':>15}")
    out = [title, head, "-" * len(head)]
    for r in rows:
        out.append(
            f"{r.name:<12} {r.scored_start:>7} {r.scored_finish:>6} | "
            f"{_cell(r.start_median_s, r.start_median_pct)} {_cell(r.start_p90_s, r.start_p90_pct)}"
            f" | {_cell(r.finish_median_s, r.finish_median_pct)} "
            f"{_cell(r.finish_p90_s, r.finish_p90_pct)}")
    out += [f"  {line}" for line in goal_lines]
    return "\n".join(out)


def _cell(seconds: float, percent: float) -> str:
    if math.isnan(seconds):
        return f"{'-':>15}"
    return f"{seconds:>6.2f}s {percent:>5.1f}%"
