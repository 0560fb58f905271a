"""Faults on the real stack, at larger sizes than the fault suite's: what was lost, what was
billed, how long until the system healed.

    python -m benchmarks.faults            # about 3 minutes
    python -m benchmarks.faults --only kill_worker database_down

Each fault (``cli.lab.faults``) runs on a private Redis (append-only file), a throwaway PostgreSQL
cluster (initdb), the vendor simulator and the real API, scheduler and 2 workers x 4 threads with
the default lease (10 s), heartbeat (2 s) and reconcile (30 s) settings. Jobs carry unique
prompts; the simulator's call log is read as the vendor's bill. Columns:

- dup: jobs with two successful calls on record; lost: jobs that never ended;
- billed/job: calls in the vendor's bill per job; on record: whether the calls on record equal
  the bill, job by job; resubmits: BFL tasks submitted twice for one job;
- heal s: kill -> the killed worker's jobs run on another worker; PostgreSQL / Redis back (or
  flushed) -> the next vendor call starts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.lab import faults
from cli.lab.faultlab import FaultLab, FaultResult

SIZES: dict[str, dict[str, Any]] = {
    "kill_worker": {"jobs": 40, "latency_s": 3.0},
    "kill_while_polling": {"jobs": 24, "latency_s": 4.0},
    "database_down": {"jobs": 60, "latency_s": 1.5, "outage_s": 35.0},
    "redis_down_during_submit": {},
    "redis_restart_open_breaker": {"jobs": 10},
    "redis_flushed": {"jobs": 60, "latency_s": 1.0},
}


def row(r: FaultResult) -> str:
    heal = "-" if r.heal_s is None else f"{r.heal_s:.1f}"
    record = "yes" if not r.mismatched and r.recorded == r.billed else f"NO ({len(r.mismatched)})"
    return (f"{r.fault:<32} {r.jobs:>4} {r.succeeded:>9} {r.failed:>6} {r.duplicated:>4} "
            f"{r.lost:>5} {r.billed_per_job:>10.2f} {record:>9} {r.resubmits:>9} {heal:>7} "
            f"{r.server_errors:>5}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(SIZES), help="run only these faults")
    args = parser.parse_args()
    lab = FaultLab()
    results: list[FaultResult] = []
    try:
        for fault in faults.ALL:
            name = fault.__name__
            if args.only and name not in args.only:
                continue
            results.append(fault(lab, **SIZES[name]))
            print(f"  {name}: {'; '.join(results[-1].notes)}", flush=True)
    finally:
        lab.close()
    print(f"\n{'fault':<32} {'jobs':>4} {'succeeded':>9} {'failed':>6} {'dup':>4} {'lost':>5} "
          f"{'billed/job':>10} {'on record':>9} {'resubmits':>9} {'heal s':>7} {'500s':>5}")
    for result in results:
        print(row(result))
    bad = [r for r in results if r.lost or r.duplicated or r.mismatched or r.server_errors
           or r.resubmits]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
