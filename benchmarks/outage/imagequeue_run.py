"""One imagequeue design through one scenario: the real stack (API, dispatcher, P Celery worker
processes x 4 threads) against the simulator, jobs submitted over the API (a burst as one bulk
batch, or one job at a time at a steady rate), every job read back when it has ended."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from benchmarks.outage import sim
from benchmarks.outage.figures import JobRecord
from benchmarks.outage.plan import BAD_MODEL, BREAKER_ENV, THREADS, Design, Scenario
from cli.lab.stack import RunningStack, start_stack
from storage.db import drop_schema, migrate
from storage.models import TERMINAL_STATUSES

GIVE_UP_S = 180.0  # after the last job is released


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run(design: Design, scenario: Scenario, processes: int, work: Path, database_url: str,
        redis_url: str, simulator_url: str, bad_names: set[str]) -> tuple[list[JobRecord], float]:
    """The jobs' records and the epoch time the scenario's clock started."""
    run_dir = work / f"{design.name}-{scenario.name}-{processes}"
    run_dir.mkdir()
    redis.Redis.from_url(redis_url).flushdb()
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{run_dir / 'imagequeue.db'}"
    else:
        drop_schema(database_url)
    migrate(database_url)
    catalogue = sim.catalogue_for(run_dir, BAD_MODEL, scenario.bad_timeout_s)
    env = {**BREAKER_ENV, **design.env, "IMGQ_CATALOGUE_PATH": str(catalogue)}
    stack = start_stack(run_dir, database_url=database_url, redis_url=redis_url,
                        simulator_url=simulator_url, image_dir=run_dir / "images",
                        extra_env=env, workers=processes, concurrency=THREADS)
    try:
        with stack.client(stack.new_tenant(f"bench-{design.name}")) as client:
            started_s = sim.start_scenario(simulator_url, scenario, bad_names)
            submitted = (_burst(client, scenario, processes) if scenario.burst_per_process
                         else _steady(client, scenario, started_s))
            return _read_back(client, stack, submitted), started_s
    finally:
        stack.stop_all()
        if not database_url.startswith("sqlite"):
            drop_schema(database_url)


def _burst(client: httpx.Client, scenario: Scenario, processes: int) -> dict[str, float]:
    """One bulk batch of every job; job id -> epoch time submitted."""
    count = len(scenario.job_offsets(processes))
    body = "\n".join(json.dumps({"custom_id": f"j{k}", "prompt": f"bench {k}"})
                     for k in range(count))
    submitted_s = time.time()
    created = client.post("/v1/batches", content=body.encode(),
                          headers={"Content-Type": "application/jsonl"})
    created.raise_for_status()
    batch_id = created.json()["id"]
    give_up = time.monotonic() + GIVE_UP_S
    while client.get(f"/v1/batches/{batch_id}").json()["status"] not in (
            "completed", "failed", "canceled") and time.monotonic() < give_up:
        time.sleep(0.2)
    rows = [json.loads(line) for line in
            client.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    return {row["job_id"]: submitted_s for row in rows}


def _steady(client: httpx.Client, scenario: Scenario, started_s: float) -> dict[str, float]:
    """One job at a time at the scenario's rate, from ``started_s``; id -> epoch submitted."""
    submitted: dict[str, float] = {}
    for k, offset in enumerate(scenario.job_offsets(1)):
        time.sleep(max(0.0, started_s + offset - time.time()))
        now_s = time.time()
        submitted[client.post("/v1/jobs", json={"prompt": f"bench {k}"}).json()["id"]] = now_s
    return submitted


def _read_back(client: httpx.Client, stack: RunningStack,
               submitted: dict[str, float]) -> list[JobRecord]:
    ended: dict[str, dict[str, Any]] = {}
    give_up = time.monotonic() + GIVE_UP_S
    while len(ended) < len(submitted) and time.monotonic() < give_up:
        for job_id in submitted:
            if job_id not in ended:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in TERMINAL_STATUSES:
                    ended[job_id] = job
        if len(ended) < len(submitted):
            time.sleep(0.2)
    records = []
    for job_id, submit_s in submitted.items():
        job = ended.get(job_id)
        ok = job is not None and job["status"] == "succeeded"
        latency_s = (seconds_between(job["created_at"], job["finished_at"])
                     if job is not None and job.get("finished_at") else None)
        records.append(JobRecord(submit_s, latency_s, ok, job.get("served_by") if job else None))
    return records
