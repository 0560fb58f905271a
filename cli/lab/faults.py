"""The faults, one function each: run it on a ``FaultLab``, get a ``FaultResult``.

Sizes are parameters: the fault suite (tests/faults) runs them small, ``python -m
benchmarks.faults`` at larger sizes (40 jobs, a 35 s database outage...).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from cli.lab.faultlab import (
    TERMINAL,
    FaultLab,
    FaultResult,
    first_call_after,
    ignored_messages,
    kill,
    worker_pid,
)
from cli.lab.stack import RunningStack
from cli.stack import wait_until

BREAKER_ENV = {"IMGQ_BREAKER_WINDOW_S": "30", "IMGQ_BREAKER_MINIMUM_CALLS": "4",
               "IMGQ_BREAKER_OPEN_DURATION_S": "120", "IMGQ_BREAKER_HALF_OPEN_PROBES": "2"}
DEAD_MODEL = "gemini-3-pro-image-preview"


def kill_worker(lab: FaultLab, jobs: int = 16, latency_s: float = 3.0,
                broker_url: str | None = None) -> FaultResult:
    """SIGKILL a worker while its vendor calls are in flight (synchronous wire format), on the
    Redis broker or on the RabbitMQ at ``broker_url``, which gives the killed worker's
    unacknowledged messages back at once: each must be ignored, the lease deciding."""
    env = {"IMGQ_BROKER_URL": broker_url} if broker_url else None
    with lab.scenario("kill-worker", latency_s, env) as run:
        ids = run.submit(jobs)
        pid = worker_pid(run.stack)
        wait_until(lambda: len(lab.held_by(pid)) >= 3, "the worker holds jobs", 30)
        wait_until(lambda: len(run.ledger()) >= 6, "calls are in flight", 30)
        killed = _kill_and_wait_elsewhere(lab, run.stack)
        lab.wait_terminal(ids, 120)
        if broker_url:  # every message handled, the returned ones too (Redis keeps them 1 h)
            run.stack.wait_idle(60)
        fault = "SIGKILL a worker mid-call" + (" (AMQP)" if broker_url else "")
        result = run.result(fault, ids, killed.heal_s)
        _count_redeliveries(result, run.stack, killed)
        result.notes.append(f"{len(killed.victims)} jobs were on the killed worker")
        return result


def kill_while_polling(lab: FaultLab, jobs: int = 8, latency_s: float = 4.0) -> FaultResult:
    """SIGKILL a worker while it polls BFL tasks (submit + poll)."""
    # Every job polls at once on a model nothing has called yet: the slow-start gate would hold
    # all but minimum_calls of them back until the first results, so it is off here.
    with lab.scenario("kill-polling", latency_s, {"IMGQ_BREAKER_GATE": "false"}) as run:
        ids = run.submit(jobs, model="flux-2-pro")
        pid = worker_pid(run.stack)

        def polling() -> set[str]:
            """The worker's jobs that poll, once every job polls a saved task: a crash between
            BFL accepting a submit and the task being saved cannot be resumed, and a job the
            worker has received but not yet leased may be submitting while its leases show
            none (every job runs at once: there is a slot for each)."""
            open_calls = [a for a in lab.attempts(ids) if a.outcome == "in_progress"]
            tasks = {a.job_id for a in open_calls if a.vendor_task_url}
            held = lab.held_by(pid) & tasks
            return held if len(tasks) == len(ids) and len(held) >= 2 else set()
        victims = wait_until(polling, "the worker polls BFL tasks", 30, poll_s=0.02)
        killed = _kill_and_wait_elsewhere(lab, run.stack)
        lab.wait_terminal(ids, 120)
        result = run.result("SIGKILL a worker polling FLUX", ids, killed.heal_s,
                            async_vendor="bfl")
        result.notes.append(f"{len(victims)} jobs were polling on the killed worker")
        return result


def database_down(lab: FaultLab, jobs: int = 32, latency_s: float = 1.5,
                  outage_s: float = 8.0) -> FaultResult:
    """PostgreSQL stopped (immediate: clients cut off) while jobs run, then started again."""
    with lab.scenario("database-down", latency_s) as run:
        ids = run.submit(jobs)
        wait_until(lambda: len(run.ledger()) >= 8, "calls are in flight", 30)
        lab.postgres.stop()
        down_until = time.monotonic() + outage_s
        with run.client() as client:  # the API answers 503s meanwhile, never a 500
            while time.monotonic() < down_until:
                lab.http_statuses[client.get(f"/v1/jobs/{ids[0]}").status_code] += 1
                time.sleep(0.5)  # the outage lasts outage_s whatever happens: time is the fault
        lab.postgres.start()
        back = time.time()
        first = wait_until(lambda: first_call_after(lab, run.tag, back), "a new call starts", 60)
        lab.wait_terminal(ids, 120)
        result = run.result(f"PostgreSQL down {outage_s:.0f}s", ids, first - back)
        if run.stack.procs["scheduler"].poll() is not None:
            result.notes.append("the scheduler exited")
        result.notes.append("heal: from PostgreSQL back to the next vendor call")
        return result


def killed_during_database_outage(lab: FaultLab, latency_s: float = 1.0) -> FaultResult:
    """PostgreSQL stopped while calls run; once a worker has its paid results and cannot record
    them, it is SIGKILLed; then PostgreSQL starts again. The jobs it held finish from the results
    it kept in the blob store, without calling a vendor again."""
    # Every call starts at once on a model nothing has called yet: without the slow-start gate,
    # which would hold all but minimum_calls of them back until the first results.
    with lab.scenario("database-down-kill", latency_s, {"IMGQ_BREAKER_GATE": "false"}) as run:
        ids = run.submit(8)  # a slot for each (2 workers x 4): every call starts at once
        pid = worker_pid(run.stack)
        wait_until(lambda: len(run.ledger()) == len(ids), "every job's call is in flight", 30)
        lab.postgres.stop()
        log = run.stack.log_dir / "worker1.log"
        held = lab.held_by(pid)

        def unrecorded() -> set[str]:
            text = log.read_text(errors="replace")
            return {j for j in held if f"job {j}: cannot write its result" in text}
        wait_until(lambda: len(held) >= 2 and unrecorded() == held,
                   "the worker has paid results it cannot record", 30)
        kill(run.stack, "worker1")
        lab.postgres.start()
        back = time.time()
        lab.wait_terminal(ids, 120)
        result = run.result("SIGKILL during a PostgreSQL outage", ids, time.time() - back)
        result.notes.append(f"{len(held)} unrecorded results were on the killed worker")
        result.notes.append("heal: from PostgreSQL back to every job ended")
        return result


def redis_down_during_submit(lab: FaultLab) -> FaultResult:
    """Redis stopped; a job submitted meanwhile is 202 and runs once Redis is back."""
    with lab.scenario("redis-down-submit", 0.2) as run:
        assert lab.redis.stop() == 0, lab.redis.log.read_text()  # a clean shutdown
        ids = run.submit(1)
        with run.client() as client:
            probe = client.get(f"/v1/jobs/{ids[0]}")
        lab.http_statuses[probe.status_code] += 1
        lab.redis.start()
        back = time.time()
        first = wait_until(lambda: first_call_after(lab, run.tag, back), "the job's call starts",
                           60)
        lab.wait_terminal(ids, 60)
        result = run.result("Redis down during a submit", ids, first - back)
        result.notes.append(f"GET while Redis was down answered {probe.status_code}")
        return result


def redis_restart_open_breaker(lab: FaultLab, jobs: int = 10) -> FaultResult:
    """Redis restarted (append-only file) while a model's breaker is open."""
    outage = {DEAD_MODEL: {"latency": {"median_s": 0.2, "sigma": 0.05}, "outages": [
        {"start_s": 0, "end_s": 3600, "kind": "overloaded", "rate": 1.0}]}}
    with lab.scenario("redis-restart", 0.2, BREAKER_ENV, outage) as run:
        ids = run.submit(8, " before")
        lab.wait_terminal(ids, 60)
        lab.redis.restart()
        restarted = time.time()
        with run.client() as client:
            wait_until(lambda: _answers(client), "the API reaches Redis again", 30)
        ids += run.submit(jobs, " after")
        lab.wait_terminal(ids, 60)
        dead_after = [c for c in run.ledger() if c["model"] == DEAD_MODEL
                      and c["started_at"] >= restarted]
        result = run.result("Redis restarted, breaker open", ids, None)
        result.notes.append(f"{len(dead_after)} calls to the dead model after the restart")
        return result


def redis_flushed(lab: FaultLab, jobs: int = 40, latency_s: float = 1.0) -> FaultResult:
    """FLUSHALL while jobs run and wait: the queue is rebuilt from the database at once."""
    with lab.scenario("redis-flush", latency_s) as run:
        ids = run.submit(jobs)
        wait_until(lambda: len(run.ledger()) >= 8, "calls are in flight", 30)
        lab.client.flushall()
        flushed = time.time()
        first = wait_until(lambda: first_call_after(lab, run.tag, flushed + 0.05),
                           "a waiting job is dispatched again", 60)
        lab.wait_terminal(ids, 120)
        result = run.result("Redis FLUSHALL", ids, first - flushed)
        worker_logs = "".join((run.stack.log_dir / f"worker{k}.log").read_text(errors="replace")
                              for k in (1, 2))
        failures = worker_logs.count("raised unexpected") + worker_logs.count("Traceback")
        result.server_errors += failures
        result.notes.append(f"{failures} task failures in the worker logs")
        return result


@dataclass(frozen=True)
class Killed:
    victims: set[str]  # the jobs worker1 held when it died
    at_s: float  # epoch seconds of the kill
    heal_s: float  # until each victim ran on another worker (or ended)


def _kill_and_wait_elsewhere(lab: FaultLab, stack: RunningStack) -> Killed:
    """SIGKILL worker1 and wait until each job it held runs on another worker (or ended)."""
    pid = worker_pid(stack)
    kill(stack, "worker1")
    killed_at, at_s = time.monotonic(), time.time()
    victims = lab.held_by(pid)  # its leases outlive it by IMGQ_LEASE_S

    def elsewhere() -> bool:
        owners, states = lab.owners(), lab.jobs(list(victims))
        return all(states[j][0] in TERMINAL or
                   ("|" in owners.get(j, "") and not owners[j].endswith(f":{pid}"))
                   for j in victims)
    wait_until(elsewhere, "the killed worker's jobs run again elsewhere", 60, poll_s=0.1)
    return Killed(victims, at_s, time.monotonic() - killed_at)


def _count_redeliveries(result: FaultResult, stack: RunningStack, killed: Killed) -> None:
    """How many of the killed worker's messages came back and were ignored, and how soon."""
    ignored = {job: seen for job, seen in ignored_messages(stack).items()
               if job in killed.victims}
    result.killed_jobs = len(killed.victims)
    result.redelivered = sum(len(seen) for seen in ignored.values())
    if ignored:
        result.redelivered_s = max(at for seen in ignored.values() for at, _ in seen) - killed.at_s
        why = Counter(reason for seen in ignored.values() for _, reason in seen)
        result.notes.append(f"{result.redelivered} messages came back within "
                            f"{result.redelivered_s:.1f}s, ignored: " +
                            ", ".join(f"{n} {reason}" for reason, n in why.items()))


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


ALL: tuple[Callable[..., FaultResult], ...] = (
    kill_worker, kill_while_polling, database_down, killed_during_database_outage,
    redis_down_during_submit,
    redis_restart_open_breaker, redis_flushed)
