"""Faults done to real processes, measured: what the fault suite (tests/faults) asserts and
``python -m benchmarks.faults`` prints.

A ``FaultLab`` is a private persistent Redis, a throwaway PostgreSQL cluster and the vendor
simulator; each fault (``cli.lab.faults``) starts the real API, scheduler and two workers on them
(default lease, heartbeat and reconcile settings), submits jobs with unique prompts, does
something bad to a real process, and reads the outcome from the database and the simulator's call
log, which stands for the vendor's bill. ``FaultResult`` holds what was lost, what was billed and
how long the system took to heal.
"""

from __future__ import annotations

import re
import signal
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy
from sqlalchemy import select

from cli.lab.broker import purge_queue
from cli.lab.postgres import ThrowawayPostgres
from cli.lab.stack import RunningStack, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http, wait_until
from imagequeue import keys
from imagequeue.settings import broker_transport
from storage.db import make_engine, migrate
from storage.models import Attempt, Job, JobStatus

TERMINAL = {s.value for s in JobStatus if s.is_terminal}
DEFAULTS = {"IMGQ_WORKER_HEARTBEAT_S": "2.0"}  # start_stack speeds heartbeats up; faults use ours
# What a worker logs when it ignores a message (workers.runner): its job was requeued since, or
# another worker holds the job's lease. Celery's log lines start with "[2026-01-31 12:00:00,123: ".
IGNORED = re.compile(r"^\[(?P<at>[\d-]+ [\d:]+),(?P<ms>\d{3}): [^\]]*\] job (?P<job>\S+): "
                     r"(?P<why>stale dispatch|another worker holds it)\b.*ignoring it$", re.M)


@dataclass
class FaultResult:
    fault: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    duplicated: int = 0  # jobs with more than one successful call on record
    lost: int = 0  # jobs not in a terminal state at the end
    billed: int = 0  # calls in the simulator's ledger for these jobs
    recorded: int = 0  # calls on record (attempt rows that are not "skipped")
    resubmits: int = 0  # asynchronous tasks submitted again for a job
    killed_jobs: int = 0  # jobs the killed worker held when it died
    redelivered: int = 0  # of those, messages delivered again and ignored (stale, or leased)
    redelivered_s: float | None = None  # from the kill to the last of those ignored
    heal_s: float | None = None
    server_errors: int = 0  # HTTP 500s seen by clients, plus tracebacks in the API's log
    mismatched: list[str] = field(default_factory=list)  # jobs whose record differs from the bill
    notes: list[str] = field(default_factory=list)

    @property
    def billed_per_job(self) -> float:
        return self.billed / self.jobs if self.jobs else 0.0


class FaultLab:
    """The long-lived parts: Redis (append-only file), PostgreSQL and the simulator."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="imgq-faults-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(self.root / "redis.log", data_dir=self.root / "redis-data").start()
        self.postgres = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="imgq-faults-pg-")))
        self.postgres.start()
        migrate(self.postgres.url)
        self.engine = make_engine(self.postgres.url)
        port = free_port()
        self.simulator_url = f"http://127.0.0.1:{port}"
        self.simulator = spawn(
            [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port),
             "--profile", "healthy"], log=self.root / "simulator.log")
        wait_http(f"{self.simulator_url}/_sim/health", proc=self.simulator)
        self.client = redis.Redis.from_url(self.redis.url)
        self.http_statuses: Counter[int] = Counter()

    def close(self) -> None:
        stop_process(self.simulator)
        self.engine.dispose()
        self.client.close()
        self.redis.stop()
        self.postgres.destroy()

    # --- one scenario's stack ----------------------------------------------------------------

    @contextmanager
    def scenario(self, name: str, latency_s: float, env: dict[str, str] | None = None,
                 models: dict[str, Any] | None = None) -> Iterator[Scenario]:
        """A fresh stack on an emptied Redis, a tenant, prompts tagged for this run; the stack
        stops afterwards whatever happened."""
        self.simulate(latency_s, models)
        stack = self.stack(name, env)
        try:
            key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
            yield Scenario(self, stack, key, f"{name} {uuid.uuid4().hex[:8]}")
        finally:
            stack.stop_all()

    def stack(self, name: str, env: dict[str, str] | None = None) -> RunningStack:
        log_dir = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        log_dir.mkdir()
        self.client.flushall()  # the Redis broker's queue with the rest
        broker = (env or {}).get("IMGQ_BROKER_URL")
        if broker and broker_transport(broker) == "amqp":
            purge_queue(broker)
        return start_stack(log_dir, database_url=self.postgres.url, redis_url=self.redis.url,
                           simulator_url=self.simulator_url, image_dir=self.root / "images",
                           extra_env={**DEFAULTS, **(env or {})}, workers=2, concurrency=4)

    def simulate(self, latency_s: float, models: dict[str, Any] | None = None) -> None:
        """Every model answers after about ``latency_s``; ``models`` overrides some of them."""
        httpx.post(f"{self.simulator_url}/_sim/reset", timeout=5).raise_for_status()
        profile = {"default": {"latency": {"median_s": latency_s, "sigma": 0.05}}, **(models or {})}
        httpx.put(f"{self.simulator_url}/_sim/profile", json={"models": profile},
                  timeout=5).raise_for_status()

    def ledger(self, tag: str) -> list[dict[str, Any]]:
        calls = httpx.get(f"{self.simulator_url}/_sim/calls", timeout=10).json()["calls"]
        return [c for c in calls if str(c["prompt"]).startswith(tag)]

    def submit(self, client: httpx.Client, tag: str, count: int, **fields: Any) -> list[str]:
        ids = []
        for k in range(count):
            answer = client.post("/v1/jobs", json={"prompt": f"{tag} #{k}", **fields})
            self.http_statuses[answer.status_code] += 1
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
        return ids

    def jobs(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """job id -> (status, prompt), read from the database itself (the API may be down)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Job.id, Job.status, Job.prompt).where(Job.id.in_(ids)))
            return {r.id: (r.status, r.prompt) for r in rows}

    def attempts(self, ids: list[str]) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(Attempt.job_id, Attempt.model, Attempt.outcome,
                                            Attempt.vendor_task_url, Attempt.started_at)
                                     .where(Attempt.job_id.in_(ids))))

    def wait_terminal(self, ids: list[str], timeout_s: float) -> None:
        def done() -> bool:
            try:
                return all(s in TERMINAL for s, _ in self.jobs(ids).values())
            except sqlalchemy.exc.OperationalError:
                return False
        wait_until(done, f"all {len(ids)} jobs end", timeout_s, poll_s=0.2)

    def owners(self) -> dict[str, str]:
        """job id -> lease owner ("token|host:pid") of every job a worker holds."""
        raw = self.client.hgetall(keys.LEASE_OWNERS)
        return {_text(k): _text(v) for k, v in raw.items()}

    def held_by(self, pid: int) -> set[str]:
        return {j for j, owner in self.owners().items() if owner.endswith(f":{pid}")}

    def result(self, fault: str, stack: RunningStack, ids: list[str], tag: str,
               heal_s: float | None, async_vendor: str | None = None) -> FaultResult:
        """Everything the table reports, from the database, the ledger and the API's log."""
        jobs = self.jobs(ids)
        attempts = self.attempts(ids)
        prompts = {job_id: prompt for job_id, (_, prompt) in jobs.items()}
        billed = Counter(c["prompt"] for c in self.ledger(tag))
        recorded = Counter(prompts[a.job_id] for a in attempts if a.outcome != "skipped")
        successes = Counter(a.job_id for a in attempts if a.outcome == "success")
        async_billed = Counter(c["prompt"] for c in self.ledger(tag) if c["vendor"] == async_vendor)
        api_log = (stack.log_dir / "api.log").read_text(errors="replace")
        statuses = Counter(s for s, _ in jobs.values())
        return FaultResult(
            fault=fault, jobs=len(ids), succeeded=statuses[JobStatus.SUCCEEDED.value],
            failed=sum(n for s, n in statuses.items() if s != JobStatus.SUCCEEDED.value
                       and s in TERMINAL),
            duplicated=sum(1 for n in successes.values() if n > 1),
            lost=len(ids) - sum(n for s, n in statuses.items() if s in TERMINAL),
            billed=sum(billed.values()), recorded=sum(recorded.values()),
            resubmits=sum(n - 1 for n in async_billed.values() if n > 1),
            heal_s=heal_s,
            server_errors=self.http_statuses[500] + api_log.count("Traceback"),
            mismatched=sorted(p for p in set(billed) | set(recorded) if billed[p] != recorded[p]))


@dataclass
class Scenario:
    lab: FaultLab
    stack: RunningStack
    key: str
    tag: str  # every prompt starts with it: the ledger's rows for this run

    def client(self) -> httpx.Client:
        return self.stack.client(self.key)

    def submit(self, count: int, prefix: str = "", **fields: Any) -> list[str]:
        with self.client() as client:
            return self.lab.submit(client, f"{self.tag}{prefix}", count, **fields)

    def ledger(self) -> list[dict[str, Any]]:
        return self.lab.ledger(self.tag)

    def result(self, fault: str, ids: list[str], heal_s: float | None,
               async_vendor: str | None = None) -> FaultResult:
        return self.lab.result(fault, self.stack, ids, self.tag, heal_s, async_vendor)


def worker_pid(stack: RunningStack, name: str = "worker1") -> int:
    return stack.procs[name].pid


def kill(stack: RunningStack, name: str) -> None:
    """SIGKILL: no shutdown, no acknowledgement, no cleanup of any kind."""
    proc = stack.procs.pop(name)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def first_call_after(lab: FaultLab, tag: str, moment_s: float) -> float | None:
    starts = [c["started_at"] for c in lab.ledger(tag) if c["started_at"] >= moment_s]
    return min(starts) if starts else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def ignored_messages(stack: RunningStack) -> dict[str, list[tuple[float, str]]]:
    """Job id -> (epoch seconds, why) of each message for it the workers received and ignored
    (``stale dispatch`` or ``another worker holds it``), from their logs."""
    found: dict[str, list[tuple[float, str]]] = {}
    for log in sorted(stack.log_dir.glob("worker*.log")):
        for m in IGNORED.finditer(log.read_text(errors="replace")):
            at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S").timestamp() + int(m["ms"]) / 1000
            found.setdefault(m["job"], []).append((at, m["why"]))
    return found
