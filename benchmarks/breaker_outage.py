"""Breaker outage benchmark: what a dead model costs with a shared breaker (with its slow-start
gate, ``IMGQ_BREAKER_GATE=true``, and without it), one breaker per worker process, and no
breaker at all.

    python -m benchmarks.breaker_outage [--database-url postgresql+psycopg://...] [--jobs 120]

Each mode starts the real stack (API, dispatcher, 4 Celery worker processes) against the vendor
simulator, where gemini-3-pro-image-preview (the head of the default route) answers 100 % 503.
Jobs are submitted at a steady rate; the simulator's call log counts the calls sent to the dead
model. Latencies are scaled down (about 0.2 s a call) and the breaker's window and open period
shortened to match, so the four runs take a couple of minutes. Everything is on loopback: a
private redis-server, the simulator and the stack are started here and stopped at the end.
The last table is ``benchmarks.breaker_latency`` (allow + record) against the same Redis.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks import breaker_latency
from cli.lab.stack import fast_catalogue, sim_calls, sim_profile, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http
from storage.db import drop_schema, migrate

MODEL_A = "gemini-3-pro-image-preview"  # the head of the default route
MODES = ("gated", "shared", "local", "off")
"""``gated`` is the shared breaker with its slow-start gate; the others run without the gate."""
WORKERS = 4
CAP = 2  # concurrent calls per model, cluster-wide
BREAKER_ENV = {
    "IMGQ_BREAKER_WINDOW_S": "10", "IMGQ_BREAKER_MINIMUM_CALLS": "4",
    "IMGQ_BREAKER_OPEN_DURATION_S": "5", "IMGQ_BREAKER_HALF_OPEN_PROBES": "2",
    "IMGQ_VENDOR_SLOT_WAIT_S": "0.5", "IMGQ_PARK_BACKOFF_S": "0.5", "IMGQ_JOB_DEADLINE_S": "120",
}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_mode(mode: str, work: Path, database_url: str, redis_url: str, simulator_url: str,
             jobs: int, rate_per_s: float) -> dict[str, Any]:
    redis.Redis.from_url(redis_url).flushdb()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{work / f'{mode}.db'}"
    else:
        drop_schema(database_url)
    migrate(database_url)
    httpx.post(f"{simulator_url}/_sim/reset", timeout=5).raise_for_status()
    sim_profile(simulator_url, outage_on=MODEL_A)
    (work / mode).mkdir()
    env = {**BREAKER_ENV, "IMGQ_BREAKER_MODE": "shared" if mode == "gated" else mode,
           "IMGQ_BREAKER_GATE": "true" if mode == "gated" else "false",
           "IMGQ_CATALOGUE_PATH": str(fast_catalogue(work, cap=CAP))}
    stack = start_stack(work / mode, database_url=database_url, redis_url=redis_url,
                        simulator_url=simulator_url, image_dir=work / mode / "images",
                        extra_env=env, workers=WORKERS, concurrency=4)
    try:
        with stack.client(stack.new_tenant(f"bench-{mode}")) as client:
            ids = []
            started = time.monotonic()
            for k in range(jobs):
                time.sleep(max(0.0, started + k / rate_per_s - time.monotonic()))
                ids.append(client.post("/v1/jobs", json={"prompt": f"bench {k}"}).json()["id"])
            finished: dict[str, dict[str, Any]] = {}
            give_up = time.monotonic() + 180
            while len(finished) < len(ids) and time.monotonic() < give_up:
                for job_id in ids:
                    if job_id not in finished:
                        job = client.get(f"/v1/jobs/{job_id}").json()
                        if job["status"] in ("succeeded", "failed", "canceled", "expired"):
                            finished[job_id] = job
                time.sleep(0.2)
    finally:
        stack.stop_all()
        if not database_url.startswith("sqlite"):
            drop_schema(database_url)
    done = list(finished.values())
    latencies_s = [seconds_between(j["created_at"], j["finished_at"]) for j in done
                   if j["status"] == "succeeded"]
    return {
        "mode": mode, "dead_calls": len(sim_calls(simulator_url, MODEL_A)),
        "succeeded": sum(j["status"] == "succeeded" for j in done), "jobs": jobs,
        "p50_s": statistics.median(latencies_s) if latencies_s else float("nan"),
        "p95_s": percentile(latencies_s, 0.95) if latencies_s else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default="sqlite:///", help="default: SQLite files")
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--rate", type=float, default=8.0, help="jobs submitted per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgq-outage-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis.log").start()
        redis_url = redis_server.url
        sim_port = free_port()
        simulator = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1",
                           "--port", str(sim_port), "--profile", "healthy"],
                          log=work / "simulator.log")
        simulator_url = f"http://127.0.0.1:{sim_port}"
        try:
            wait_http(f"{simulator_url}/_sim/health", proc=simulator)
            print(f"{WORKERS} workers x 4 threads, {args.jobs} jobs at {args.rate}/s, "
                  f"{MODEL_A} in a 100 % 503 outage")
            print(f"{'breaker':<8} {'calls to dead model':>20} {'succeeded':>10} "
                  f"{'p50 s':>7} {'p95 s':>7}", flush=True)
            for mode in MODES:
                r = run_mode(mode, work, args.database_url, redis_url, simulator_url,
                             args.jobs, args.rate)
                print(f"{r['mode']:<8} {r['dead_calls']:>20} {r['succeeded']:>6}/{r['jobs']:<3} "
                      f"{r['p50_s']:>7.2f} {r['p95_s']:>7.2f}", flush=True)
            print()
            breaker_latency.main(["--redis-url", redis_url, "--iterations", "3000"])
        finally:
            stop_process(simulator)
            redis_server.stop()


if __name__ == "__main__":
    main()
