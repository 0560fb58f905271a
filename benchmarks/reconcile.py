"""What a reconcile pass costs with a deep backlog, and whether dispatch waits for it.

For each backlog size a fresh schema gets that many queued jobs (bulk insert, created ten minutes
ago: a backlog that persists) plus 100 created now, all in the waiting index as they would be.
Printed, each the median of three passes:

* ``full``: ``reconcile`` reading every queued row (the pass after a Redis flush, a new leader,
  an outage, and every ``IMGQ_RECONCILE_FULL_INTERVAL_S``);
* ``incremental``: the pass every ``IMGQ_RECONCILE_INTERVAL_S`` (rows created since the last
  pass, less ``IMGQ_RECONCILE_LOOKBACK_S``), when this tree has one;
* ``heal``: the whole healing step (the pass, running jobs re-leased, tenant counters recounted);
* dispatch latency: a real ``Dispatcher.run`` (reconciling every 2 s, fully when ``--full``)
  against a worker heartbeat of 4 slots; a probe job is pushed every 20 ms and timed from the
  push to its ``send_task``, whose recorder marks it finished at once (an instant worker).

    python -m benchmarks.reconcile --database-url postgresql+psycopg://postgres@127.0.0.1/x \\
        --redis-url redis://127.0.0.1:6379/12

Goal: a pass at 50,000 queued <= 50 ms; dispatch never waits on it.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import keys
from scheduler.dispatcher import Dispatcher
from scheduler.queue import heartbeats
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.queue.jobs import reconcile
from storage.db import drop_schema, make_engine, make_sessionmaker, migrate
from storage.models import Job, JobStatus, utcnow
from storage.tenants import create_tenant


def fill(sessions: sessionmaker[Session], index: WaitingIndex, queued: int) -> None:
    """``queued`` jobs created ten minutes ago and 100 created now, stored and indexed."""
    with sessions.begin() as session:
        tenant, _ = create_tenant(session, f"bench-{uuid.uuid4().hex[:6]}")
        tenant_id = tenant.id
    old, now = utcnow() - timedelta(minutes=10), utcnow()
    rows: list[dict[str, Any]] = []
    for k in range(queued + 100):
        rows.append({"id": f"job_{uuid.uuid4().hex}", "tenant_id": tenant_id, "prompt": "p",
                     "width": 1024, "height": 1024, "n": 1, "route": "default", "lane": "bulk",
                     "priority": 0, "metadata_": {}, "status": JobStatus.QUEUED.value,
                     "created_at": old if k < queued else now, "images": [],
                     "attempts_count": 0, "degraded": False, "cost_usd": 0.0})
    for start in range(0, len(rows), 5000):
        with sessions.begin() as session:
            session.execute(insert(Job), rows[start:start + 5000])
    # Parked far ahead: indexed (a pass finds nothing to heal) and never dispatched.
    far = int(time.time() * 1000) + 86_400_000
    for start in range(0, len(rows), 5000):
        part = rows[start:start + 5000]
        index.redis.zadd(keys.PARKED, {r["id"]: far for r in part})
        index.redis.hset(keys.JOB_TENANTS, mapping={r["id"]: tenant_id for r in part})


def median_s(step: Callable[[], object], times: int = 3) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        step()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent)


class InstantWorker:
    """Stands in for Celery: records when each job was sent and finishes it at once."""

    def __init__(self, index: WaitingIndex) -> None:
        self.index = index
        self.sent: dict[str, float] = {}

    def send_task(self, name: str, args: list[Any], queue: str) -> None:
        self.sent[args[0]] = time.perf_counter()
        self.index.finished(args[0])


def dispatch_latency(client: redis.Redis, sessions: sessionmaker[Session], full: bool,
                     seconds: float = 8.0) -> list[float]:
    index = WaitingIndex(client)
    worker = InstantWorker(index)
    dispatcher = Dispatcher(client, sessions, worker,
                            interval_s=0.5, reconcile_every_s=2.0)
    reconciler = getattr(dispatcher, "reconciler", None)
    if reconciler is not None and full:
        reconciler.full_every_s = 0.0
    heartbeats.heartbeat(client, "bench@host", 4, ttl_s=120)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    thread.start()
    pushed: dict[str, float] = {}
    time.sleep(3.0)  # past the first (full) pass on becoming active
    ends = time.perf_counter() + seconds
    while time.perf_counter() < ends:
        job_id = f"probe_{uuid.uuid4().hex}"
        pushed[job_id] = time.perf_counter()
        index.push([IndexEntry(job_id)])
        time.sleep(0.02)
    time.sleep(3.0)
    dispatcher.stop()
    thread.join(timeout=30)
    heartbeats.forget(client, "bench@host")
    return [worker.sent.get(j, time.perf_counter()) - t for j, t in pushed.items()]


def run(queued: int, database_url: str, redis_url: str) -> dict[str, float]:
    drop_schema(database_url)
    migrate(database_url)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    index = WaitingIndex(client)
    try:
        fill(sessions, index, queued)
        result = {"queued": queued, "full": median_s(lambda: reconcile(sessions, index))}
        dispatcher = Dispatcher(client, sessions, InstantWorker(index))
        reconciler = getattr(dispatcher, "reconciler", None)
        if reconciler is not None:
            client.set(keys.GENERATION, "bench")  # as an active dispatcher keeps it
            reconciler.run_pass()  # the first pass is full; the next ones incremental
            result["incremental"] = median_s(reconciler.run_pass)
        result["heal"] = median_s(dispatcher.heal)
        for mode in ("steady", "full"):
            if mode == "full" and reconciler is None:
                continue
            latencies = sorted(dispatch_latency(client, sessions, full=mode == "full"))
            result[f"{mode}_p50_ms"] = latencies[len(latencies) // 2] * 1000
            result[f"{mode}_max_ms"] = latencies[-1] * 1000
        return result
    finally:
        engine.dispose()
        client.flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 50_000])
    parser.add_argument("--database-url", required=True, help="its schema is dropped")
    parser.add_argument("--redis-url", required=True, help="this database is emptied")
    args = parser.parse_args()
    print(f"{'queued':>7} {'full ms':>8} {'incr ms':>8} {'heal ms':>8} "
          f"{'dispatch p50/max ms':>20} {'with full passes':>17}")
    for size in args.sizes:
        r = run(size, args.database_url, args.redis_url)
        incr = f"{r['incremental'] * 1000:>8.1f}" if "incremental" in r else f"{'-':>8}"
        full = (f"{r['full_p50_ms']:>8.1f}/{r['full_max_ms']:<8.1f}" if "full_p50_ms" in r
                else f"{'-':>17}")
        print(f"{size:>7} {r['full'] * 1000:>8.1f} {incr} {r['heal'] * 1000:>8.1f} "
              f"{r['steady_p50_ms']:>11.1f}/{r['steady_max_ms']:<8.1f} {full}", flush=True)


if __name__ == "__main__":
    main()
