"""What imagequeue adds per job, beside a bare Celery task on the same Redis, in one run.

    python -m benchmarks.overhead [--database-url postgresql+psycopg://...] [--quick]

The real stack (one API process, the scheduler, 2 Celery worker processes x 8 threads, the
database at ``--database-url``, which it wipes) runs against the vendor simulator answering in a
fixed time (sigma 0), on a private redis-server; the floor is ``benchmarks.celery_floor``, a
no-op task on the same 2 x 8 workers and the same Redis, measured first. Nothing is instrumented:

* **Per-step latency**, one job at a time and at 50 % slot use (Poisson arrivals): the client's
  send time, then the Redis server's own clock for every command that names the job (MONITOR,
  read in this process): the API's push into the waiting index, the dispatcher's Celery message
  (its LPUSH), the worker's receipt of it (kombu's ``unacked`` entry), and the worker's last
  command (clearing the job's entries once it has ended); between them the attempt row's call
  start and ``latency_ms``. API submit = send -> push; dispatch = push -> message; delivery =
  message -> receipt; prep = receipt -> call start; call wrapper = ``latency_ms`` - vendor time;
  finish = call end -> last command. End to end = last command - send - vendor time: the
  client's polling is excluded.
* **Throughput** at 10 ms vendor latency: one batch drained, jobs over the time from the first
  start to the last finish; the floor: tasks queued first, then moved under the workers' queue
  at once (RENAME), tasks over the first to last finish.
* **CPU per job**: user + system seconds from ``/proc/<pid>/stat`` of each process over the
  throughput run, PostgreSQL as the backends serving the database (``pg_stat_activity``,
  sampled every 0.25 s; this process's own connections excluded).
* **GET /v1/jobs/{id}** requests/s against the one API process with 1, 4 and 16 clients, then
  against two (``imgq api --workers 2``, the API restarted) with 4 and 16, with ``wrk`` (one
  thread, ids cycled by a Lua script) if installed, else httpx threads in this process (whose CPU then
  competes with the API's on the same cores).
* **reconcile()** (``scheduler.queue.jobs``: a full pass) timed in this process at each backlog
  depth (a tenant capped at one running job holds it queued), and, where the tree has an
  incremental reconciler (``scheduler.queue.reconcile``), its regular pass over a backlog older
  than its look-back. Probe jobs of another tenant run at each depth twice, first with no pass
  due (the control), then while the scheduler reconciles every few seconds: if dispatch waits on
  the passes, the probes' slowest submit -> start grows by about a pass.
"""

from __future__ import annotations

import argparse
import importlib
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import redis
from sqlalchemy import Engine, create_engine, func, select, text

from benchmarks import celery_floor
from cli.lab.stack import RunningStack, fast_catalogue, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http, wait_until
from imagequeue import keys
from scheduler.queue.index import WaitingIndex
from scheduler.queue.jobs import reconcile
from storage.db import drop_schema, make_engine, make_sessionmaker, migrate
from storage.models import TERMINAL_STATUSES, Attempt, Job, JobStatus

PROCESSES, THREADS = 2, 8
FAST_VENDOR_S = 0.01
API_PROCESSES = 1  # the API of the stack; the GET rows also run two (`imgq api --workers 2`)
GET_ROWS = ((1, 1), (1, 4), (1, 16), (2, 4), (2, 16))  # (API processes, clients)
DEFAULT_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HARNESS = "imgq-overhead"  # application_name of this process's own database connections
STEPS = ("API submit", "dispatch", "Celery delivery", "prep", "call wrapper", "finish",
         "end to end - vendor")
JOB_ID = re.compile(rb"job_[0-9a-f]{32}")
OTHER, SEND, RECEIPT = 0, 1, 2  # what a traced command is to a job
TICKS = 100.0  # os.sysconf("SC_CLK_TCK") on Linux
ENDED = [s.value for s in TERMINAL_STATUSES]
PROMPT = "overhead"  # one prompt: the simulator renders its picture once (a vendor's CPU is not ours)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads); None once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuMeter:
    """CPU seconds of named processes, and of the PostgreSQL backends serving the database (new
    ones count from birth; one that ends between two samples loses its last 0.25 s)."""

    def __init__(self, processes: dict[str, list[int]], pg: Engine | None) -> None:
        self.processes, self.pg = processes, pg
        self._base: dict[str, float] = {}
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_pg, name="overhead-cpu", daemon=True)

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_s(pid) or 0.0 for pid in pids) for name, pids in self.processes.items()}

    def _pg_once(self, first: bool) -> None:
        assert self.pg is not None
        with self.pg.connect() as conn:
            pids = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend' AND application_name <> :me"),
                {"me": HARNESS}).scalars().all()
        for pid in pids:
            used = cpu_s(pid)
            if used is not None:
                self._first.setdefault(pid, used if first else 0.0)
                self._last[pid] = used

    def _sample_pg(self) -> None:
        while not self._stop.wait(0.25):
            self._pg_once(first=False)

    def start(self) -> CpuMeter:
        self._base = self._now()
        if self.pg is not None:
            self._pg_once(first=True)
            self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        used = {name: now - self._base[name] for name, now in self._now().items()}
        if self.pg is not None:
            self._stop.set()
            self._thread.join()
            self._pg_once(first=False)
            used["PostgreSQL"] = sum(self._last[pid] - self._first[pid] for pid in self._last)
        return used


class RedisTrace:
    """Every command the Redis server runs that names a job, in the order it ran them, with the
    server's time (MONITOR): where a job is between the API, the dispatcher and the worker,
    without instrumenting any of them. On only while latencies are measured."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: dict[str, list[tuple[float, int]]] = defaultdict(list)  # (time, kind)
        self.seen = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="overhead-trace", daemon=True)

    def __enter__(self) -> RedisTrace:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("MONITOR did not start")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        redis.Redis.from_url(self.url).ping()  # one more line, so that the reader sees the flag
        self._thread.join(10)

    def _run(self) -> None:
        send_name, snapshot = keys.GENERATE_TASK.encode(), f'"SET" "{keys.SNAPSHOT}"'.encode()
        client = redis.Redis.from_url(self.url)
        with client.monitor() as monitor:  # type: ignore[no-untyped-call]
            self._ready.set()
            while not self._stop.is_set():
                line = monitor.connection.read_response()
                if not isinstance(line, bytes):
                    continue
                ids = set(JOB_ID.findall(line))
                command = line[line.index(b"]") + 2:][:40]
                if not ids or command.startswith(snapshot):  # the ETA snapshot lists jobs
                    continue
                at = float(line.split(b" ", 1)[0])
                kind = (SEND if command.upper().startswith(b'"LPUSH"') and send_name in line
                        else RECEIPT if command.startswith(b'"HSET" "unacked"') else OTHER)
                for job_id in ids:
                    self.events[job_id.decode()].append((at, kind))
                self.seen += 1

    def settle(self, quiet_s: float = 0.3) -> None:
        """Until no command has named a job for ``quiet_s`` (the last jobs' final ones are in)."""
        seen, since = -1, time.monotonic()

        def quiet() -> bool:
            nonlocal seen, since
            if self.seen != seen:
                seen, since = self.seen, time.monotonic()
            return time.monotonic() - since >= quiet_s

        wait_until(quiet, "the trace is quiet", timeout_s=10, poll_s=0.05)


def steps_ms(sent_s: float, events: list[tuple[float, int]], call_start_s: float,
             latency_ms: int, vendor_s: float) -> dict[str, float] | None:
    """One job's steps in ms (``STEPS``), None if the trace missed one of its marks. The marks:
    the first command naming the job (the API's push into the waiting index), the dispatcher's
    Celery message (LPUSH), the worker's receipt of it (kombu's ``unacked`` entry), and the last
    command naming the job (the worker clearing its entries once the job has ended)."""
    sends = [at for at, kind in events if kind == SEND]
    receipts = [at for at, kind in events if kind == RECEIPT and sends and at >= sends[0]]
    if not sends or not receipts:
        return None
    push_s, send_s, received_s, done_s = events[0][0], sends[0], receipts[0], events[-1][0]
    call_end_s = call_start_s + latency_ms / 1000
    seconds = (push_s - sent_s, send_s - push_s, received_s - send_s, call_start_s - received_s,
               latency_ms / 1000 - vendor_s, done_s - call_end_s, done_s - sent_s - vendor_s)
    return {step: 1000 * s for step, s in zip(STEPS, seconds, strict=True)}


@dataclass
class Floor:
    round_trip_ms: list[float]
    rate: float
    cpu_ms: dict[str, float]  # per task, by process


@dataclass
class Bench:
    work: Path
    database_url: str
    redis: RedisServer
    simulator_url: str
    simulator: subprocess.Popen[bytes]
    stack: RunningStack | None = None
    db: Engine = field(init=False)

    def __post_init__(self) -> None:
        postgres = not self.database_url.startswith("sqlite")
        self.db = create_engine(self.database_url, connect_args=(
            {"application_name": HARNESS} if postgres else {}))

    @property
    def postgres(self) -> bool:
        return not self.database_url.startswith("sqlite")

    def vendor(self, seconds: float) -> None:
        httpx.put(f"{self.simulator_url}/_sim/profile", timeout=5, json={"models": {"default": {
            "latency": {"median_s": seconds, "sigma": 0.0}}}}).raise_for_status()

    def processes(self) -> dict[str, list[int]]:
        assert self.stack is not None and self.redis.proc is not None
        procs = self.stack.procs
        return {"worker": [p.pid for name, p in procs.items() if name.startswith("worker")],
                "API": [procs["api"].pid], "scheduler": [procs["scheduler"].pid],
                "Redis": [self.redis.proc.pid], "simulator": [self.simulator.pid]}

    def wait_ended(self, ids: Sequence[str], timeout_s: float, poll_s: float = 0.01) -> None:
        def ended() -> bool:
            with self.db.connect() as conn:
                done = conn.scalar(select(func.count()).select_from(Job).where(
                    Job.id.in_(ids), Job.status.in_(ENDED)))
            return done == len(ids)

        wait_until(ended, f"{len(ids)} jobs end", timeout_s, poll_s)

    def jobs(self, ids: Sequence[str]) -> dict[str, Any]:
        with self.db.connect() as conn:
            return {r.id: r for r in conn.execute(select(
                Job.id, Job.status, Job.created_at, Job.started_at, Job.finished_at).where(
                Job.id.in_(ids)))}

    def calls(self, ids: Sequence[str]) -> dict[str, Any]:
        """Each job's successful call (its attempt row)."""
        with self.db.connect() as conn:
            return {r.job_id: r for r in conn.execute(select(
                Attempt.job_id, Attempt.started_at, Attempt.latency_ms).where(
                Attempt.job_id.in_(ids), Attempt.outcome == "success"))}

    def batch(self, client: httpx.Client, lines: int, tag: str) -> list[str]:
        """A batch of ``lines`` jobs, accepted (and indexed) when this returns; its job ids."""
        body = "".join(f'{{"custom_id": "{tag}{k}", "prompt": "{PROMPT}"}}\n' for k in range(lines))
        answer = client.post("/v1/batches", content=body, timeout=600,
                             headers={"Content-Type": "application/jsonl"})
        answer.raise_for_status()
        with self.db.connect() as conn:
            return list(conn.execute(select(Job.id).where(
                Job.batch_id == answer.json()["id"])).scalars())


# --- the floor ------------------------------------------------------------------------------

def floor(work: Path, broker_url: str, tasks: int, round_trips: int) -> Floor:
    env = {celery_floor.BROKER_ENV: broker_url}
    logs = [work / f"floor{k + 1}.log" for k in range(PROCESSES)]
    procs = [spawn([sys.executable, "-m", "celery", "-A", "benchmarks.celery_floor", "worker",
                    "-Q", celery_floor.QUEUE, "-P", "threads", "-c", str(THREADS),
                    "-n", f"floor{k + 1}@%h", "--loglevel", "INFO", "--without-gossip",
                    "--without-mingle", "--without-heartbeat"], env=env, log=log)
             for k, log in enumerate(logs)]
    client = redis.Redis.from_url(broker_url)
    sender = celery_floor.sender(broker_url)
    try:
        wait_until(lambda: all(log.exists() and " ready." in log.read_text() for log in logs),
                   "the floor's workers are ready", timeout_s=60)
        samples = []
        for k in range(round_trips + 20):  # the first 20 warm up connections and threads
            started = time.perf_counter()
            sender.send_task(celery_floor.TASK, args=["floor-reply"], queue=celery_floor.QUEUE)
            if client.blpop(["floor-reply"], timeout=10) is None:
                raise RuntimeError(f"a floor task did not answer; see {logs}")
            if k >= 20:
                samples.append(1000 * (time.perf_counter() - started))
        staging = f"{celery_floor.QUEUE}-staging"
        for _ in range(tasks):
            sender.send_task(celery_floor.TASK, args=["floor-done"], queue=staging)
        meter = CpuMeter({"worker": [p.pid for p in procs],
                          "Redis": [int(client.info("server")["process_id"])]}, None).start()
        client.rename(staging, celery_floor.QUEUE)  # every task under the workers at once
        wait_until(lambda: client.llen("floor-done") >= tasks, f"{tasks} floor tasks end",
                   timeout_s=120, poll_s=0.02)
        used = meter.stop()
        stamps = [float(s) for s in client.lrange("floor-done", 0, -1)]
    finally:
        for proc in procs:
            stop_process(proc)
        sender.close()
    return Floor(samples, (len(stamps) - 1) / (max(stamps) - min(stamps)),
                 {name: 1000 * s / tasks for name, s in used.items()})


# --- imagequeue -----------------------------------------------------------------------------

def latency_run(bench: Bench, client: httpx.Client, jobs: int, vendor_s: float,
                rate: float | None) -> tuple[list[dict[str, float]], list[float], float]:
    """``jobs`` jobs, one at a time (``rate`` None) or Poisson arrivals at ``rate`` per second:
    each job's steps, the POST round trips in ms, and the share of slots busy."""
    sent: dict[str, float] = {}
    answers: list[float] = []
    rng = random.Random(16)
    with RedisTrace(bench.redis.url) as trace:
        due = time.time()
        first = due
        for _ in range(jobs):
            if rate is not None:
                due += rng.expovariate(rate)
                time.sleep(max(0.0, due - time.time()))
            started = time.time()
            job_id = client.post("/v1/jobs", json={"prompt": PROMPT}).json()["id"]
            answers.append(1000 * (time.time() - started))
            sent[job_id] = started
            if rate is None:
                bench.wait_ended([job_id], timeout_s=vendor_s + 30)
        bench.wait_ended(list(sent), timeout_s=vendor_s * jobs + 60)
        trace.settle()
    rows, calls = bench.jobs(list(sent)), bench.calls(list(sent))
    steps = []
    for job_id, sent_s in sent.items():
        call = calls.get(job_id)
        if call is None or not trace.events[job_id]:
            continue
        step = steps_ms(sent_s, trace.events[job_id], call.started_at.timestamp(),
                        call.latency_ms, vendor_s)
        if step is not None:
            steps.append(step)
    busy = sum((r.finished_at - r.started_at).total_seconds() for r in rows.values()
               if r.started_at and r.finished_at)
    span = max(r.finished_at.timestamp() for r in rows.values() if r.finished_at) - first
    return steps, answers, busy / (PROCESSES * THREADS * span)


def throughput(bench: Bench, client: httpx.Client, jobs: int) -> tuple[float, dict[str, float], int]:
    """One batch of ``jobs`` at 10 ms a call: jobs/s, CPU ms per job by process, failures."""
    bench.vendor(FAST_VENDOR_S)
    meter = CpuMeter(bench.processes(), bench.db if bench.postgres else None).start()
    ids = bench.batch(client, jobs, "thr")
    bench.wait_ended(ids, timeout_s=jobs, poll_s=0.2)
    used = meter.stop()
    rows = bench.jobs(ids).values()
    failed = sum(r.status != JobStatus.SUCCEEDED.value for r in rows)
    span = (max(r.finished_at.timestamp() for r in rows if r.finished_at)
            - min(r.started_at.timestamp() for r in rows if r.started_at))
    return len(ids) / span, {name: 1000 * s / jobs for name, s in used.items()}, failed


WRK_SCRIPT = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local k = 0
wrk.headers["Authorization"] = "Bearer %(key)s"
request = function()
  k = k %% #ids + 1
  return wrk.format("GET", "/v1/jobs/" .. ids[k])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout + e.status, latency:percentile(50)))
end
"""


def get_rate(bench: Bench, api_key: str, ids: Sequence[str], clients: int,
             seconds: float) -> tuple[float, float, int]:
    """GET /v1/jobs/{id} with ``clients`` concurrent clients cycling ``ids``: requests/s,
    p50 ms, errors."""
    assert bench.stack is not None
    wrk = shutil.which("wrk")
    if wrk:
        ids_file, script = bench.work / "ids.txt", bench.work / "get.lua"
        ids_file.write_text("\n".join(ids) + "\n")
        script.write_text(WRK_SCRIPT % {"ids": ids_file, "key": api_key})
        out = subprocess.run([wrk, "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "10s",
                              "-s", str(script), bench.stack.api_url], capture_output=True,
                             text=True, check=True, timeout=seconds + 60).stdout
        found = re.search(r"RESULT (\d+) (\d+) (\d+) ([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"wrk said:\n{out}")
        requests, duration_us, errors, p50_us = found.groups()
        return int(requests) / (int(duration_us) / 1e6), float(p50_us) / 1000, int(errors)
    return _get_rate_threads(bench.stack, api_key, ids, clients, seconds)


def _get_rate_threads(stack: RunningStack, api_key: str, ids: Sequence[str], clients: int,
                      seconds: float) -> tuple[float, float, int]:
    latencies: list[float] = []
    errors = [0]
    until = time.monotonic() + seconds

    def poll(offset: int) -> None:
        with stack.client(api_key) as client:
            k = offset
            while time.monotonic() < until:
                started = time.perf_counter()
                answer = client.get(f"/v1/jobs/{ids[k % len(ids)]}")
                latencies.append(1000 * (time.perf_counter() - started))
                errors[0] += answer.status_code != 200
                k += clients

    threads = [threading.Thread(target=poll, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / seconds, statistics.median(latencies), errors[0]


def restart_api(stack: RunningStack, processes: int) -> None:
    stack.stop("api")
    stack.start_api(processes)


def restart_scheduler(bench: Bench, probe: httpx.Client, **env: str) -> None:
    """The scheduler again with ``env``; returns once it dispatches (its first heal is done)."""
    assert bench.stack is not None
    bench.stack.stop("scheduler")
    bench.stack.env.update(env)
    bench.stack.start_scheduler()
    job_id = probe.post("/v1/jobs", json={"prompt": PROMPT}).json()["id"]
    bench.wait_ended([job_id], timeout_s=120, poll_s=0.05)


def probe_ms(bench: Bench, probe: httpx.Client, window_s: float, rate: float) -> list[float]:
    """Jobs submitted at ``rate`` per second for ``window_s``: each one's submit -> start."""
    ids: list[str] = []
    started = time.monotonic()
    while time.monotonic() - started < window_s:
        time.sleep(max(0.0, started + len(ids) / rate - time.monotonic()))
        ids.append(probe.post("/v1/jobs", json={"prompt": PROMPT}).json()["id"])
    bench.wait_ended(ids, timeout_s=120, poll_s=0.1)
    return [1000 * (r.started_at - r.created_at).total_seconds() for r in bench.jobs(ids).values()
            if r.started_at is not None]


def time_s(action: Any, times: int = 3) -> float:
    """The median duration of ``times`` calls."""
    durations = []
    for _ in range(times):
        clock = time.perf_counter()
        action()
        durations.append(time.perf_counter() - clock)
    return statistics.median(durations)


def regular_pass_s(sessions: Any, index: WaitingIndex) -> float | None:
    """The scheduler's regular pass where it is incremental (``scheduler.queue.reconcile``), over
    a backlog older than its look-back; None where every pass is a full one (the baseline)."""
    try:
        module = importlib.import_module("scheduler.queue.reconcile")
    except ImportError:
        return None
    reconciler = module.Reconciler(sessions, index, lookback_s=0.0)
    reconciler.run_pass()  # the first pass reads everything
    return time_s(reconciler.run_pass)


def queued_count(bench: Bench) -> int:
    with bench.db.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Job).where(
            Job.status == JobStatus.QUEUED.value)) or 0)


# --- the run --------------------------------------------------------------------------------

def load_average() -> str:
    """The host's 1, 5 and 15 minute load averages: how much else wanted the cores."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def ms(value: float) -> str:
    return f"{value:8.1f}" if value == value else f"{'-':>8}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="a PostgreSQL database the benchmark may wipe")
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--vendor-s", type=float, default=2.0,
                        help="the vendor's fixed latency in the latency runs")
    parser.add_argument("--light-jobs", type=int, default=12)
    parser.add_argument("--half-jobs", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs in the throughput batch")
    parser.add_argument("--floor-tasks", type=int, default=6000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--depths", type=int, nargs="+", default=[1000, 50_000])
    parser.add_argument("--get-s", type=float, default=4.0, help="seconds per GET row")
    parser.add_argument("--probe-s", type=float, default=12.0, help="probe window per depth")
    parser.add_argument("--reconcile-every-s", type=float, default=5.0,
                        help="the scheduler's reconcile interval while probes run")
    parser.add_argument("--no-backlog", action="store_true",
                        help="stop after CPU per job (no GET rows, no reconcile: about 1 minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.vendor_s, args.light_jobs, args.half_jobs, args.jobs = 0.5, 4, 16, 300
        args.floor_tasks, args.round_trips, args.depths = 1000, 100, [1000, 3000]
        args.get_s, args.probe_s, args.reconcile_every_s = 1.0, 4.0, 1.5
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imgq-overhead-") as tmp:
        work = Path(tmp)
        server = RedisServer(work / "redis.log").start()
        sim_port = free_port()
        simulator = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1",
                           "--port", str(sim_port), "--profile", "healthy"],
                          log=work / "simulator.log")
        bench = Bench(work, args.database_url, server, f"http://127.0.0.1:{sim_port}", simulator)
        try:
            wait_http(f"{bench.simulator_url}/_sim/health", proc=simulator)
            run(bench, args)
        finally:
            if bench.stack is not None:
                bench.stack.stop_all()
            stop_process(simulator)
            server.stop()
            bench.db.dispose()
            if bench.postgres:
                drop_schema(args.database_url)
    print(f"\ntotal {time.monotonic() - started:.0f}s; load average at the end {load_average()}")


def run(bench: Bench, args: argparse.Namespace) -> None:
    slots = PROCESSES * THREADS
    base = floor(bench.work, bench.redis.url_for(1), args.floor_tasks, args.round_trips)
    floor_rt = statistics.median(base.round_trip_ms)
    print(f"{PROCESSES} worker processes x {THREADS} threads, "
          f"{'PostgreSQL' if bench.postgres else bench.database_url}, "
          f"a private redis-server; bare Celery: the same {PROCESSES} x {THREADS} (threads, acks "
          f"late, prefetch 1), a task that RPUSHes one Redis key; load average {load_average()}",
          flush=True)
    if bench.postgres:
        drop_schema(bench.database_url)
    migrate(bench.database_url)
    bench.work.joinpath("stack").mkdir()
    bench.stack = start_stack(
        bench.work / "stack", database_url=bench.database_url, redis_url=bench.redis.url,
        simulator_url=bench.simulator_url, image_dir=bench.work / "images",
        workers=PROCESSES, concurrency=THREADS, extra_env={
            "IMGQ_CATALOGUE_PATH": str(fast_catalogue(bench.work, cap=4 * slots)),
            "IMGQ_TENANT_MAX_QUEUED": "0", "IMGQ_WORKER_HEARTBEAT_S": "2",
            "IMGQ_DISPATCH_INTERVAL_S": "0.5"})
    stack = bench.stack
    bench.vendor(args.vendor_s)
    with stack.client(stack.new_tenant(f"overhead-{uuid.uuid4().hex[:8]}")) as client:
        for _ in range(3):  # warm-up: connections, imports, the first snapshot
            job_id = client.post("/v1/jobs", json={"prompt": PROMPT}).json()["id"]
            bench.wait_ended([job_id], timeout_s=args.vendor_s + 30)
        light, light_post, _ = latency_run(bench, client, args.light_jobs, args.vendor_s, None)
        rate = 0.5 * slots / args.vendor_s
        half, half_post, busy = latency_run(bench, client, args.half_jobs, args.vendor_s, rate)
        print(f"\nper-step latency, ms: vendor fixed at {args.vendor_s:g} s; light = one job at a "
              f"time ({len(light)} jobs), 50 % = Poisson arrivals at {rate:g}/s ({len(half)} jobs, "
              f"slots busy {100 * busy:.0f} %); end to end excludes the client's polling")
        print(f"{'step':<24}{'light p50':>10}{'light p95':>10}{'50% p50':>10}{'50% p95':>10}"
              f"{'bare Celery':>13}")
        for step in STEPS:
            a, b = [s[step] for s in light], [s[step] for s in half]
            floor_col = f"{floor_rt:13.1f}" if step == STEPS[-1] else ""
            print(f"{step:<24}{ms(statistics.median(a))}  {ms(percentile(a, 0.95))}  "
                  f"{ms(statistics.median(b))}  {ms(percentile(b, 0.95))}{floor_col}")
        print(f"{'(POST answered)':<24}{ms(statistics.median(light_post))}  "
              f"{ms(percentile(light_post, 0.95))}  {ms(statistics.median(half_post))}  "
              f"{ms(percentile(half_post, 0.95))}", flush=True)

        jobs_s, cpu, failed = throughput(bench, client, args.jobs)
    print(f"\nthroughput at {1000 * FAST_VENDOR_S:g} ms vendor latency, {PROCESSES} x {THREADS}: "
          f"imagequeue {jobs_s:.1f} jobs/s ({args.jobs} jobs in one batch, {failed} failed), "
          f"bare Celery {base.rate:.0f} tasks/s ({args.floor_tasks}): {jobs_s / base.rate:.3f} of it")
    ours = ("worker", "API", "scheduler", "PostgreSQL", "Redis")
    print(f"{'CPU per job, ms':<24}{'imagequeue':>11}{'bare Celery':>13}")
    for name in ours:
        if name in cpu:
            other = base.cpu_ms.get(name)
            print(f"{name:<24}{cpu[name]:11.2f}" + (f"{other:13.2f}" if other is not None else
                                                   f"{'-':>13}"))
    total = sum(cpu[name] for name in ours if name in cpu)
    print(f"{'total':<24}{total:11.2f}{sum(base.cpu_ms.values()):13.2f}")
    print(f"{'(the simulator, a vendor)':<24}{cpu['simulator']:11.2f}", flush=True)
    if not args.no_backlog:
        backlog(bench, args)


def backlog(bench: Bench, args: argparse.Namespace) -> None:
    """GET rates, reconcile passes and dispatch under a backlog held queued by a capped tenant.
    At each depth the probes run twice: with the default interval (30 s, no pass in the
    window: the control), then while the scheduler reconciles every ``--reconcile-every-s``."""
    stack = bench.stack
    assert stack is not None
    bench.vendor(1.0)
    held_key = stack.new_tenant(f"backlog-{uuid.uuid4().hex[:8]}", "--max-running", "1")
    engine = make_engine(bench.database_url)
    sessions = make_sessionmaker(engine)
    index = WaitingIndex(redis.Redis.from_url(bench.redis.url))
    get_rows: list[tuple[int, int, int, float, float, int]] = []
    reconcile_rows: list[tuple[int, float, float | None, list[float], list[float]]] = []
    with stack.client(held_key) as held, stack.client(stack.new_tenant("probe")) as probe:
        ids: list[str] = []
        for depth in args.depths:
            while len(ids) < depth:
                ids += bench.batch(held, min(50_000, depth - len(ids)), f"d{depth}-{len(ids)}-")
            queued = queued_count(bench)
            restart_scheduler(bench, probe, IMGQ_RECONCILE_INTERVAL_S="30")  # its next pass: 30 s
            sample = random.Random(depth).sample(ids, min(2000, len(ids)))
            running = API_PROCESSES
            for processes, clients in GET_ROWS:
                if processes != running:
                    restart_api(stack, processes)
                    running = processes
                rate, p50, errors = get_rate(bench, held_key, sample, clients, args.get_s)
                get_rows.append((queued, processes, clients, rate, p50, errors))
            if running != API_PROCESSES:
                restart_api(stack, API_PROCESSES)
            control = probe_ms(bench, probe, args.probe_s, 4.0)
            restart_scheduler(bench, probe, IMGQ_RECONCILE_INTERVAL_S=f"{args.reconcile_every_s:g}")
            full_s = time_s(lambda: reconcile(sessions, index))
            probes = probe_ms(bench, probe, args.probe_s, 4.0)
            # After the probes: this pass moves the point the scheduler's next one reads from.
            reconcile_rows.append((queued, full_s, regular_pass_s(sessions, index), control, probes))
    engine.dispose()
    tool = ("wrk, 1 thread" if shutil.which("wrk")
            else "httpx threads in the benchmark's process, competing for the same cores")
    print(f"\nGET /v1/jobs/{{id}}, one API process (and two: `imgq api --workers 2`), ids cycled "
          f"over up to 2000 queued jobs ({tool})")
    print(f"{'queued':>8}{'API procs':>10}{'clients':>9}{'req/s':>9}{'p50 ms':>9}{'errors':>8}")
    for queued, processes, clients, rate, p50, errors in get_rows:
        print(f"{queued:>8}{processes:>10}{clients:>9}{rate:>9.0f}{p50:>9.1f}{errors:>8}")
    print(f"\nreconcile passes in this process (median of 3; regular: the scheduler's own, '-': "
          f"every pass is full); probe jobs at 4/s for {args.probe_s:g} s, submit -> start ms, "
          f"with no pass due (control) and while the scheduler reconciles every "
          f"{args.reconcile_every_s:g} s")
    print(f"{'queued':>8}{'full ms':>9}{'regular ms':>12}{'control p50':>13}{'max':>8}"
          f"{'reconciling p50':>17}{'p95':>8}{'max':>8}  dispatch waits")
    for queued, full_s, regular_s, control, probes in reconcile_rows:
        stall_ms = max(probes) - max(control)  # a full pass is the longest dispatch could wait
        verdict = ("(passes too short to tell)" if full_s < 0.1 else
                   "yes" if stall_ms > 500 * full_s else "no")
        print(f"{queued:>8}{1000 * full_s:>9.1f}"
              + (f"{'-':>12}" if regular_s is None else f"{1000 * regular_s:>12.1f}")
              + f"{statistics.median(control):>13.1f}{max(control):>8.1f}"
              f"{statistics.median(probes):>17.1f}{percentile(probes, 0.95):>8.1f}"
              f"{max(probes):>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
