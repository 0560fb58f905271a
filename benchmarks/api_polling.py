"""How many ``GET /v1/jobs/{id}`` one API process answers a second, and ``--workers 2``.

One stack (simulator answering in two minutes, a worker of 2 threads, the scheduler publishing
its snapshot every second) holds 12 jobs: 2 running, 1 dispatched, 9 waiting. API processes are
started in turn on it, each from a source tree (``--source``: this one by default; give
``/path/to/other/checkout`` too to compare, side by side in one run), as ``imgq api`` (``--workers
N``, log level info as in production) or, for a tree whose ``imgq api`` has no ``--workers``, as
``uvicorn api.asgi:app --log-level info``. wrk (``apt-get install wrk``) polls the last waiting job
with 1, 4 and 16 connections for ``--seconds`` each. The tenant's requests per minute are
counted (``--rpm``, high enough never to refuse). Besides requests/s and latency, each line gives
the CPU time spent per request by the API processes, by the stack's private Redis and by the
PostgreSQL backends serving this database (from /proc: it holds on a busy, shared machine where
the rate does not).

    python -m benchmarks.api_polling --database-url postgresql+psycopg://postgres@127.0.0.1/x \\
        --source /work/before --source .

Goal: >= 600 requests/s with 16 clients.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psycopg

from cli.lab.stack import RunningStack, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http, wait_until
from storage.db import drop_schema, migrate

REPO = Path(__file__).resolve().parents[1]


def slow_simulator(url: str) -> None:
    models = {"default": {"latency": {"median_s": 120.0, "sigma": 0.01}}}
    httpx.put(f"{url}/_sim/profile", json={"models": models}, timeout=5).raise_for_status()


def api_command(source: Path, port: int, workers: int) -> list[str]:
    help_text = subprocess.run([sys.executable, "-m", "cli", "api", "--help"], cwd=source,
                               env={**os.environ, "PYTHONPATH": str(source)},
                               capture_output=True, text=True).stdout
    if "--workers" in help_text:
        return [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers)]
    return [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1", "--port",
            str(port), "--log-level", "info", "--workers", str(workers)]


def cpu_s(pids: list[int]) -> float:
    """User and system CPU seconds of these processes and all their descendants so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:  # it exited meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        todo += [int(c) for c in children]
    return total


def postgres_backends(database_url: str) -> list[int]:
    """The server processes of every connection to this database now."""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]


def wrk(url: str, api_key: str, clients: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{seconds:.0f}s",
         "--latency", "-H", f"Authorization: Bearer {api_key}", url],
        capture_output=True, text=True, check=True).stdout

    def ms(label: str) -> float:
        found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if found is None:
            return float("nan")
        return float(found[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found[2]]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    done = re.search(r"(\d+) requests in", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {"rps": float(rate[1]) if rate else float("nan"), "p50_ms": ms("50%"),
            "p99_ms": ms("99%"), "non_2xx": float(bad[1]) if bad else 0.0,
            "requests": float(done[1]) if done else 0.0}


def measure(stack: RunningStack, source: Path, workers: int, job_url: str, api_key: str,
            clients: list[int], seconds: float, rpm: int, redis_pid: int,
            database_url: str, api_env: dict[str, str]) -> list[dict[str, Any]]:
    port = free_port()
    env = {**stack.env, "PYTHONPATH": str(source), "IMGQ_TENANT_RPM": str(rpm),
           "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **api_env}
    log = stack.log_dir / f"api-{source.name or 'tree'}-{workers}.log"
    with open(log, "ab") as out:  # run from the tree: `python -m` puts the working directory first
        proc = subprocess.Popen(api_command(source, port, workers), cwd=source,
                                env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", proc=proc, timeout_s=60)
        url = f"{base}{job_url}"
        wrk(url, api_key, 4, 2)  # warm up: imports, pools, every worker process
        rows = []
        for c in clients:
            backends = postgres_backends(database_url)
            before = cpu_s([proc.pid]), cpu_s([redis_pid]), cpu_s(backends)
            figures = wrk(url, api_key, c, seconds)
            after = cpu_s([proc.pid]), cpu_s([redis_pid]), cpu_s(backends)
            requests = max(1.0, figures["requests"])
            api_ms, redis_ms, pg_ms = ((b - a) * 1000 / requests
                                       for a, b in zip(before, after, strict=True))
            rows.append({"source": str(source), "workers": workers, "clients": c, **figures,
                         "api_ms": api_ms, "redis_ms": redis_ms, "pg_ms": pg_ms})
        return rows
    finally:
        stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="its schema is dropped")
    parser.add_argument("--source", type=Path, action="append", default=None,
                        help="a source tree to run the API from (repeatable; default: this one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every figure")
    parser.add_argument("--rpm", type=int, default=1_000_000)
    parser.add_argument("--api-env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the API processes (repeatable)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    sources = [s.resolve() for s in args.source or [REPO]]
    drop_schema(args.database_url)
    migrate(args.database_url)
    with tempfile.TemporaryDirectory(prefix="imgq-bench-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis.log").start()
        assert redis_server.proc is not None
        redis_pid = redis_server.proc.pid
        sim_port = free_port()
        sim = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port",
                     str(sim_port), "--profile", "healthy"], log=work / "simulator.log")
        sim_url = f"http://127.0.0.1:{sim_port}"
        stack = None
        try:
            wait_http(f"{sim_url}/_sim/health", proc=sim)
            slow_simulator(sim_url)
            stack = start_stack(work, database_url=args.database_url,
                                redis_url=redis_server.url, simulator_url=sim_url,
                                image_dir=work / "images", concurrency=2)
            api_key = stack.new_tenant("poller")
            with httpx.Client(base_url=stack.api_url, timeout=10,
                              headers={"Authorization": f"Bearer {api_key}"}) as client:
                ids = [client.post("/v1/jobs", json={"prompt": f"study {k}"}).json()["id"]
                       for k in range(12)]
                wait_until(lambda: client.get(f"/v1/jobs/{ids[-1]}").json()
                           .get("eta_start_seconds") is not None, "the job has an ETA", 30)
                job = client.get(f"/v1/jobs/{ids[-1]}").json()
            print(f"polling {job['id']}: status {job['status']}, position "
                  f"{job['queue_position']}", flush=True)
            print(f"{'source':<24} {'workers':>7} {'clients':>7} {'req/s':>8} {'p50 ms':>7} "
                  f"{'p99 ms':>7} {'non-2xx':>7}  CPU ms per request: {'API':>5} {'Redis':>5} "
                  f"{'PG':>5}", flush=True)
            for _ in range(args.rounds):
                for workers in args.workers:
                    for source in sources:
                        for r in measure(stack, source, workers, f"/v1/jobs/{ids[-1]}", api_key,
                                         args.clients, args.seconds, args.rpm,
                                         redis_pid, args.database_url,
                                         dict(e.split("=", 1) for e in args.api_env)):
                            print(f"{r['source'][-24:]:<24} {r['workers']:>7} {r['clients']:>7} "
                                  f"{r['rps']:>8.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                                  f"{r['non_2xx']:>7.0f}  {'':>19} {r['api_ms']:>5.2f} "
                                  f"{r['redis_ms']:>5.2f} {r['pg_ms']:>5.2f}", flush=True)
        finally:
            if stack is not None:
                stack.stop_all()
            stop_process(sim)
            redis_server.stop()


if __name__ == "__main__":
    main()
