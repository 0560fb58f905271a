"""Scaling benchmark: jobs/s with 1, 2 and 4 worker processes, each broker and each blob store.

    python -m benchmarks.scaling [--database-url postgresql+psycopg://...] [--broker-url amqp://...]

The real stack (API, scheduler, P Celery worker processes x 8 threads) drains a batch against the
vendor simulator answering every call in exactly 2 s, so a process can do at most 4 jobs/s and
what is measured is what imagequeue adds between calls. Each combination of broker (Redis, or the
RabbitMQ at ``--broker-url``) and blob store (a local directory, or a real S3 API server process,
moto's) runs in the same invocation, side by side. Throughput is the batch's jobs over the time
from the first job's start to the last one's end (what imagequeue adds between calls stretches
it); the ratio to linear is jobs/s at P processes over P times the same combination's jobs/s at
one process, and "of bound" is jobs/s at the largest P over P x threads / 2 s. Each stack first
drains a warm-up batch of one job per slot, untimed: from a cold start the slow-start gate admits
4 calls to a model, then 8, 16, ... as they succeed, which is not what is measured here (it costs
a burst about three call latencies at reduced width; ``benchmarks.breaker_outage`` measures it).
Everything is on loopback: a private redis-server, the simulator, moto and the stack are started
here and stopped at the end; RabbitMQ gets a vhost of its own when ``rabbitmqctl`` allows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, select

from cli.lab.broker import PrivateVhost, amqp_error, purge_queue
from cli.lab.s3 import S3Server
from cli.lab.stack import fast_catalogue, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http, wait_until
from storage.db import drop_schema, migrate
from storage.models import Job

THREADS = 8
VENDOR_S = 2.0
PROCESSES = (1, 2, 4)
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def makespan_rate(started_s: list[float], finished_s: list[float]) -> float:
    """Jobs per second from the first job's start to the last one's end: with every call taking
    exactly ``VENDOR_S``, a stack that adds nothing reaches slots / VENDOR_S."""
    return len(finished_s) / (max(finished_s) - min(started_s))


def run_one(work: Path, *, processes: int, database_url: str, redis_url: str,
            simulator_url: str, extra_env: dict[str, str], rounds: int) -> float:
    """One stack with ``processes`` workers drains a batch of ``rounds`` job per slot; jobs/s."""
    redis.Redis.from_url(redis_url).flushdb()
    drop_schema(database_url)
    migrate(database_url)
    work.mkdir(parents=True)
    env = {"IMGQ_CATALOGUE_PATH": str(fast_catalogue(work, cap=THREADS * max(PROCESSES))),
           "IMGQ_TENANT_MAX_QUEUED": "0", **extra_env}
    stack = start_stack(work, database_url=database_url, redis_url=redis_url,
                        simulator_url=simulator_url, image_dir=work / "images", extra_env=env,
                        workers=processes, concurrency=THREADS)
    slots = processes * THREADS
    jobs = slots * rounds
    try:
        with stack.client(stack.new_tenant(f"bench-{uuid.uuid4().hex[:8]}")) as client:
            drain(client, slots, "warm-up")  # the slow-start gate opens past the slots
            batch_id = drain(client, jobs, "scaling")
    finally:
        stack.stop_all()
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(Job.status, Job.started_at, Job.finished_at)
                            .where(Job.batch_id == batch_id)).all()
    engine.dispose()
    failed = sum(status != "succeeded" for status, _, _ in rows)
    if failed:
        raise RuntimeError(f"{failed} of {jobs} jobs did not succeed; logs:\n{stack.logs()}")
    return makespan_rate([started.timestamp() for _, started, _ in rows if started],
                         [finished.timestamp() for _, _, finished in rows if finished])


def drain(client: httpx.Client, jobs: int, prompt: str) -> str:
    """A batch of ``jobs`` submitted and waited for; its id."""
    body = "".join(f'{{"custom_id": "j{k}", "prompt": "{prompt} {k}"}}\n' for k in range(jobs))
    answer = client.post("/v1/batches", content=body, headers={"Content-Type": "application/jsonl"})
    answer.raise_for_status()
    batch_id: str = answer.json()["id"]

    def drained() -> bool:
        counts = client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
        return int(counts["queued"]) + int(counts["running"]) == 0

    wait_until(drained, f"the batch of {jobs} jobs ends", timeout_s=jobs * VENDOR_S, poll_s=0.5)
    return batch_id


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL database the benchmark may wipe")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER, help="a RabbitMQ to use")
    parser.add_argument("--rounds", type=int, default=8, help="jobs per worker slot")
    parser.add_argument("--processes", type=int, nargs="+", default=list(PROCESSES))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="imgq-scaling-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis.log").start()
        s3 = S3Server(work / "moto.log").start()
        sim_port = free_port()
        simulator = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1",
                           "--port", str(sim_port), "--profile", "healthy"],
                          log=work / "simulator.log")
        simulator_url = f"http://127.0.0.1:{sim_port}"
        vhost = None
        try:
            wait_http(f"{simulator_url}/_sim/health", proc=simulator)
            httpx.put(f"{simulator_url}/_sim/profile", timeout=5, json={"models": {"default": {
                "latency": {"median_s": VENDOR_S, "sigma": 0.0}}}}).raise_for_status()
            brokers: dict[str, dict[str, str]] = {"redis": {}}
            problem = amqp_error(args.broker_url)
            if problem is None:
                vhost = PrivateVhost.create(args.broker_url, f"imgq-scaling-{uuid.uuid4().hex[:8]}")
                brokers["rabbitmq"] = {"IMGQ_BROKER_URL": vhost.url if vhost else args.broker_url}
            else:
                print(f"RabbitMQ at {args.broker_url} is not usable ({problem}): its rows are left out")
            print(f"simulator at a fixed {VENDOR_S:.0f} s per image; P worker processes x {THREADS} "
                  f"threads; {args.rounds} jobs per slot; PostgreSQL; at most {THREADS / VENDOR_S:.0f} "
                  "jobs/s per process")
            print(f"{'broker':<9} {'blobs':<6} " + " ".join(f"{f'P={p} jobs/s':>12}" for p in
                  args.processes) + " " + " ".join(f"{f'P={p} /linear':>12}" for p in
                                                   args.processes[1:]) + f" {'of bound':>9}",
                  flush=True)
            for broker, broker_env in brokers.items():
                for blobs in ("local", "s3"):
                    rates: dict[int, float] = {}
                    for p in args.processes:
                        env = dict(broker_env)
                        if blobs == "s3":
                            bucket = s3.create_bucket(f"scaling-{uuid.uuid4().hex[:10]}")
                            env.update(s3.env(bucket, "images/"))
                        if "IMGQ_BROKER_URL" in env:
                            purge_queue(env["IMGQ_BROKER_URL"])
                        rates[p] = run_one(work / f"{broker}-{blobs}-{p}", processes=p,
                                           database_url=args.database_url,
                                           redis_url=redis_server.url, simulator_url=simulator_url,
                                           extra_env=env, rounds=args.rounds)
                    base = rates[args.processes[0]] / args.processes[0]
                    top = args.processes[-1]
                    print(f"{broker:<9} {blobs:<6} "
                          + " ".join(f"{rates[p]:>12.2f}" for p in args.processes) + " "
                          + " ".join(f"{rates[p] / (p * base):>12.3f}" for p in args.processes[1:])
                          + f" {rates[top] / (top * THREADS / VENDOR_S):>9.3f}", flush=True)
        finally:
            if vhost is not None:
                vhost.delete()
            stop_process(simulator)
            s3.stop()
            redis_server.stop()
            drop_schema(args.database_url)


if __name__ == "__main__":
    main()
