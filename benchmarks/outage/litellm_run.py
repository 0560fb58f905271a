"""LiteLLM's Router through one scenario: P processes x 4 threads (``litellm_worker``), the same
concurrency as imagequeue's P worker processes x 4 threads, against the same simulator."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import redis

from benchmarks.outage import sim
from benchmarks.outage.figures import JobRecord
from benchmarks.outage.plan import BAD_MODEL, LITELLM_ROUTER, THREADS, Design, Scenario, wire_names
from cli.stack import stop_process

INSTALL_HINT = "pip install -e '.[bench]'  (litellm==1.110.2)"


def available() -> bool:
    return importlib.util.find_spec("litellm") is not None


def run(design: Design, scenario: Scenario, processes: int, work: Path, redis_url: str,
        redis_port: int, simulator_url: str,
        bad_names: set[str]) -> tuple[list[JobRecord], float]:
    """The jobs' records and the epoch time the scenario's clock started."""
    run_dir = work / f"{design.name}-{scenario.name}-{processes}"
    run_dir.mkdir()
    redis.Redis.from_url(redis_url).flushdb()
    names = wire_names()
    ids = {wire: model_id for model_id, wire in names.items()}
    catalogue = sim.catalogue_for(run_dir, BAD_MODEL, scenario.bad_timeout_s)
    timeouts = sim.model_timeouts(catalogue, names)
    offsets = scenario.job_offsets(processes)
    procs = []
    for p in range(processes):
        config = {
            "api_base": f"{simulator_url}/aggregator/v1", "models": list(names.values()),
            "timeouts": {names[m]: t for m, t in timeouts.items()},
            "redis": {"host": "127.0.0.1", "port": redis_port} if design.litellm_redis else None,
            "router": LITELLM_ROUTER, "threads": THREADS, "tag": f"bench p{p}",
            "offsets": offsets[p::processes]}
        with open(run_dir / f"litellm{p}.log", "ab") as log:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "benchmarks.outage.litellm_worker", json.dumps(config)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log))
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"a LiteLLM process did not start; see {run_dir}")
        started_s = sim.start_scenario(simulator_url, scenario, bad_names)
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{started_s}\n".encode())
            proc.stdin.close()
        records = []
        for proc in procs:
            assert proc.stdout is not None
            out = proc.stdout.read()  # the one JSON list, printed as the process ends
            proc.wait(timeout=60)
            for submit_s, latency_s, ok, by in json.loads(out):
                records.append(JobRecord(submit_s, latency_s, ok,
                                         ids.get(by, by)))
        return records, started_s
    finally:
        for proc in procs:
            stop_process(proc)
