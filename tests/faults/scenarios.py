"""The faults, one function each: run it on a ``FaultLab``, get a ``FaultResult``.

Sizes are parameters: the test suite runs them small, ``benchmarks/faults.py`` at the sizes of
the issue that asked for them (40 jobs, a 35 s database outage...).
"""

from __future__ import annotations

import time
import uuid

import httpx

from tests.faults.harness import (
    FaultLab,
    FaultResult,
    first_call_after,
    kill,
    wait_until,
    worker_pid,
)

BREAKER_ENV = {"IMGQ_BREAKER_WINDOW_S": "30", "IMGQ_BREAKER_MINIMUM_CALLS": "4",
               "IMGQ_BREAKER_OPEN_DURATION_S": "120", "IMGQ_BREAKER_HALF_OPEN_PROBES": "2"}
DEAD_MODEL = "gemini-3-pro-image-preview"


def _tag(fault: str) -> str:
    return f"{fault} {uuid.uuid4().hex[:8]}"


def kill_worker(lab: FaultLab, jobs: int = 16, latency_s: float = 3.0) -> FaultResult:
    """SIGKILL a worker while its vendor calls are in flight (synchronous wire format)."""
    lab.simulate(latency_s)
    stack = lab.stack("kill-worker")
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("kill-worker")
        with stack.client(key) as client:
            ids = lab.submit(client, tag, jobs)
        pid = worker_pid(stack)
        victims = wait_until(lambda: (held := lab.held_by(pid)) and len(held) >= 3 and held,
                             "the worker holds jobs", 30)
        wait_until(lambda: len(lab.ledger(tag)) >= 6, "calls are in flight", 30)
        victims = lab.held_by(pid)
        kill(stack, "worker1")
        killed_at = time.monotonic()

        def rerun() -> bool:
            owners, states = lab.owners(), lab.jobs(list(victims))
            return all(states[j][0] in ("succeeded", "failed") or
                       (j in owners and not owners[j].endswith(f":{pid}") and "|" in owners[j])
                       for j in victims)
        wait_until(rerun, "the killed worker's jobs run again elsewhere", 60, poll_s=0.1)
        heal_s = time.monotonic() - killed_at
        lab.wait_terminal(ids, 120)
        result = lab.result("SIGKILL a worker mid-call", stack, ids, tag, heal_s)
        result.notes.append(f"{len(victims)} jobs were on the killed worker")
        return result
    finally:
        stack.stop_all()


def kill_while_polling(lab: FaultLab, jobs: int = 8, latency_s: float = 4.0) -> FaultResult:
    """SIGKILL a worker while it polls BFL tasks (submit + poll)."""
    lab.simulate(latency_s)
    stack = lab.stack("kill-polling")
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("kill-polling")
        with stack.client(key) as client:
            ids = lab.submit(client, tag, jobs, model="flux-2-pro")
        pid = worker_pid(stack)

        def polling() -> set[str]:
            held = lab.held_by(pid)
            tasks = {a.job_id for a in lab.attempts(ids)
                     if a.vendor_task_url and a.outcome == "in_progress"}
            return held & tasks if len(held & tasks) >= 2 else set()
        victims = wait_until(polling, "the worker polls BFL tasks", 30)
        kill(stack, "worker1")
        killed_at = time.monotonic()
        lab.wait_terminal(ids, 120)
        heal_s = time.monotonic() - killed_at
        result = lab.result("SIGKILL a worker polling FLUX", stack, ids, tag, heal_s,
                            async_vendor="bfl")
        result.notes.append(f"{len(victims)} jobs were polling on the killed worker; heal is "
                            "the time until every job had ended")
        return result
    finally:
        stack.stop_all()


def database_down(lab: FaultLab, jobs: int = 32, latency_s: float = 1.5,
                  outage_s: float = 8.0) -> FaultResult:
    """PostgreSQL stopped (immediate: clients cut off) while jobs run, then started again."""
    lab.simulate(latency_s)
    stack = lab.stack("database-down")
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("database-down")
        with stack.client(key) as client:
            ids = lab.submit(client, tag, jobs)
        wait_until(lambda: len(lab.ledger(tag)) >= 8, "calls are in flight", 30)
        lab.postgres.stop()
        down_until = time.monotonic() + outage_s
        with stack.client(key) as client:  # the API answers 503s meanwhile, never a 500
            while time.monotonic() < down_until:
                lab.http_statuses[client.get(f"/v1/jobs/{ids[0]}").status_code] += 1
                time.sleep(0.5)
        lab.postgres.start()
        back = time.time()
        first = wait_until(lambda: first_call_after(lab, tag, back), "a new call starts", 60)
        heal_s = first - back
        lab.wait_terminal(ids, 120)
        result = lab.result(f"PostgreSQL down {outage_s:.0f}s", stack, ids, tag, heal_s)
        if stack.procs["scheduler"].poll() is not None:
            result.notes.append("the scheduler exited")
        result.notes.append("heal: from PostgreSQL back to the next vendor call")
        return result
    finally:
        stack.stop_all()


def redis_down_during_submit(lab: FaultLab) -> FaultResult:
    """Redis stopped; a job submitted meanwhile is 202 and runs once Redis is back."""
    lab.simulate(0.2)
    stack = lab.stack("redis-down-submit")
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("redis-down-submit")
        lab.redis.stop()
        with stack.client(key) as client:
            ids = lab.submit(client, tag, 1)
            probe = client.get(f"/v1/jobs/{ids[0]}")
            lab.http_statuses[probe.status_code] += 1
        lab.redis.start_again()
        back = time.time()
        first = wait_until(lambda: first_call_after(lab, tag, back), "the job's call starts", 60)
        lab.wait_terminal(ids, 60)
        result = lab.result("Redis down during a submit", stack, ids, tag, first - back)
        result.notes.append(f"GET while Redis was down answered {probe.status_code}")
        return result
    finally:
        stack.stop_all()


def redis_restart_open_breaker(lab: FaultLab, jobs: int = 10) -> FaultResult:
    """Redis restarted (append-only file) while a model's breaker is open."""
    lab.simulate(0.2, {DEAD_MODEL: {"latency": {"median_s": 0.2, "sigma": 0.05}, "outages": [
        {"start_s": 0, "end_s": 3600, "kind": "overloaded", "rate": 1.0}]}})
    stack = lab.stack("redis-restart", BREAKER_ENV)
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("redis-restart")
        with stack.client(key) as client:
            ids = lab.submit(client, f"{tag} before", 8)
            lab.wait_terminal(ids, 60)
            lab.redis.restart()
            restarted = time.time()
            wait_until(lambda: _answers(client), "the API reaches Redis again", 30)
            ids += lab.submit(client, f"{tag} after", jobs)
        lab.wait_terminal(ids, 60)
        dead_after = [c for c in lab.ledger(tag) if c["model"] == DEAD_MODEL
                      and c["started_at"] >= restarted]
        result = lab.result("Redis restarted, breaker open", stack, ids, tag, None)
        result.notes.append(f"{len(dead_after)} calls to the dead model after the restart")
        return result
    finally:
        stack.stop_all()


def redis_flushed(lab: FaultLab, jobs: int = 40, latency_s: float = 1.0) -> FaultResult:
    """FLUSHALL while jobs run and wait: the queue is rebuilt from the database at once."""
    lab.simulate(latency_s)
    stack = lab.stack("redis-flush")
    try:
        key = stack.new_tenant(f"faults-{uuid.uuid4().hex[:8]}")
        tag = _tag("redis-flush")
        with stack.client(key) as client:
            ids = lab.submit(client, tag, jobs)
        wait_until(lambda: len(lab.ledger(tag)) >= 8, "calls are in flight", 30)
        lab.client.flushall()
        flushed = time.time()
        first = wait_until(lambda: first_call_after(lab, tag, flushed + 0.05),
                           "a waiting job is dispatched again", 60)
        lab.wait_terminal(ids, 120)
        result = lab.result("Redis FLUSHALL", stack, ids, tag, first - flushed)
        worker_logs = "".join((stack.log_dir / f"worker{k}.log").read_text(errors="replace")
                              for k in (1, 2))
        failures = worker_logs.count("raised unexpected") + worker_logs.count("Traceback")
        result.server_errors += failures
        result.notes.append(f"{failures} task failures in the worker logs")
        return result
    finally:
        stack.stop_all()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


ALL = (kill_worker, kill_while_polling, database_down, redis_down_during_submit,
       redis_restart_open_breaker, redis_flushed)
