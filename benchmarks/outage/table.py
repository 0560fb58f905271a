"""The outage benchmark's rows: the figures of one run, formatted side by side."""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.outage import figures
from benchmarks.outage.figures import Call, JobRecord
from benchmarks.outage.plan import BAD_MODEL, THREADS, Scenario

HEADER = (f"{'design':<14} {'P':>2} {'bad calls':>9} {'succeeded':>11} {'p50 s':>7} "
          f"{'p95 s':>7}  {'':<20}")


@dataclass(frozen=True)
class Row:
    design: str
    processes: int
    bad_calls: int | None  # calls to the bad model that met its fault (None: no fault)
    succeeded: int
    jobs: int
    p50_s: float
    p95_s: float
    extra: str  # the scenario's own column, formatted

    def line(self) -> str:
        bad = "-" if self.bad_calls is None else str(self.bad_calls)
        done = f"{self.succeeded}/{self.jobs}"
        return (f"{self.design:<14} {self.processes:>2} {bad:>9} {done:>11} {self.p50_s:>7.2f} "
                f"{self.p95_s:>7.2f}  {self.extra}").rstrip()


def header(scenario: Scenario) -> str:
    return HEADER.rstrip() + (f"  {scenario.extra}" if scenario.extra else "")


def row(design: str, scenario: Scenario, processes: int, jobs: list[JobRecord],
        bad_calls: list[Call], every_call: list[Call], started_s: float) -> Row:
    """``bad_calls``: the call log of the bad model's names; ``every_call``: the whole log;
    ``started_s``: when the scenario's clock started (epoch seconds)."""
    faulted = [c for c in bad_calls if c["outcome"] == scenario.fault]
    values = figures.latencies(jobs)
    return Row(design, processes, len(faulted) if scenario.fault else None,
               sum(j.ok for j in jobs), len(jobs), figures.percentile(values, 0.5),
               figures.percentile(values, 0.95),
               extra(scenario, processes, jobs, faulted, every_call, started_s))


def extra(scenario: Scenario, processes: int, jobs: list[JobRecord], faulted: list[Call],
          every_call: list[Call], started_s: float) -> str:
    if scenario.name == "b":
        back = figures.recovery_s(jobs, started_s + scenario.fault_end_s, BAD_MODEL)
        return "never" if back is None else f"{back:.0f}"
    if scenario.name == "c":
        last_s = max((c["finished_at"] or 0.0 for c in every_call), default=started_s)
        return f"{figures.slot_seconds(faulted, last_s):.0f}"
    if scenario.name == "healthy":
        full_s = figures.time_to_concurrency(every_call, processes * THREADS)
        call_s = figures.median_call_s(every_call)
        if full_s is None:
            return f"never (peak {figures.peak_concurrency(every_call)})"
        multiple = full_s / call_s if call_s and not math.isnan(call_s) else math.nan
        return f"{full_s:.2f} s = {multiple:.1f} x call"
    return ""
