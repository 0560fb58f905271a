"""Queue position and ETA as waiting users see them, against the real stack.

The simulator answers every model after a fixed 0.3 s; the worker has a known concurrency.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from cli.lab.stack import RunningStack, wait_jobs
from cli.stack import wait_until
from imagequeue import keys
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from scheduler.eta import telemetry
from scheduler.queue.index import WaitingIndex
from scheduler.queue.jobs import JobQueue, JobRequest
from storage.db import make_engine, make_sessionmaker
from storage.models import Job
from storage.tenants import tenant_for_api_key
from tests.e2e.conftest import running_stack

LATENCY_S = 0.3
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
          simulator_url: str) -> Iterator[RunningStack]:
    """One worker with one slot, SQLite, snapshots every second."""
    root = tmp_path_factory.mktemp("positions")
    with running_stack(root, f"sqlite:///{root / 'imgq.db'}", redis_url, simulator_url,
                       concurrency=1,
                       extra_env={"IMGQ_DISPATCH_BUFFER": "0", "IMGQ_DISPATCH_STALE_S": "3",
                                  "IMGQ_RECONCILE_INTERVAL_S": "1"}) as running:
        yield running


@pytest.fixture()
def fixed_latency(simulator: str) -> str:
    profile = {"models": {"default": {"latency": {"median_s": LATENCY_S, "sigma": 0.0}}}}
    httpx.put(f"{simulator}/_sim/profile", json=profile, timeout=5).raise_for_status()
    return simulator


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("waiting")


def submit(client: httpx.Client, n: int, prefix: str) -> list[str]:
    ids = []
    for k in range(n):
        response = client.post("/v1/jobs", json={"prompt": f"{prefix} {k}", "model": "gpt-image-1.5"})
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def local_queue(stack: RunningStack) -> JobQueue:
    settings = Settings(database_url=stack.env["IMGQ_DATABASE_URL"])
    index = WaitingIndex(redis.Redis.from_url(stack.env["IMGQ_REDIS_URL"]))
    return JobQueue(make_sessionmaker(make_engine(settings.database_url)), index,
                    load_catalogue(settings.catalogue_path))


def test_positions_count_down_to_zero_and_are_never_shared(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    with stack.client(api_key) as client:
        ids = submit(client, 8, "countdown")
        history: dict[str, list[int]] = {job_id: [] for job_id in ids}
        while True:
            # Read the last-submitted job first: positions only ever decrease, so a job read
            # later can only have moved further ahead — any shared position is a real one.
            jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in reversed(ids)]
            waiting = [j for j in jobs if j["status"] == "queued" and j["queue_position"] is not None]
            positions = [j["queue_position"] for j in waiting]
            assert len(positions) == len(set(positions)), f"shared position: {positions}"
            for job in waiting:
                history[job["id"]].append(job["queue_position"])
            if all(j["status"] in TERMINAL for j in jobs):
                break
            time.sleep(0.05)
    for job_id, seen in history.items():
        assert seen == sorted(seen, reverse=True), f"{job_id} went back: {seen}"
    last = history[ids[-1]]
    assert last[-1] == 0 and len(set(last)) >= 3, last


def test_waiting_jobs_carry_an_eta_that_grows_with_position(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    with stack.client(api_key) as client:
        warm_up = submit(client, 2, "warm-up")  # latency history for the model
        ids = submit(client, 10, "eta")
        try:
            wait_jobs(client, warm_up)
            stack.wait_snapshot()  # one that has the warm-up's latencies and the waiting jobs
            # Last-submitted first: the queue only moves forward while we read, so a job read
            # later can only have moved further ahead — the order seen is a real one.
            jobs = [client.get(f"/v1/jobs/{job_id}").json() for job_id in reversed(ids)]
            waiting = sorted((j for j in jobs if j["queue_position"] is not None),
                             key=lambda j: j["queue_position"])
            assert len(waiting) >= 3
            etas = [j["eta_start_seconds"] for j in waiting]
            assert all(e is not None for e in etas), waiting
            assert etas == sorted(etas)
            assert etas[-1] > etas[0], waiting
            for job in waiting:
                assert job["eta_finish_seconds"] >= job["eta_start_seconds"]
                # One slot, 0.3 s per job: about (position + 1) x 0.3 s on an idle machine,
                # more on a loaded one (the forecast learns the calls' real length).
                print(f"position {job['queue_position']}: ETA to start "
                      f"{job['eta_start_seconds']:.2f}s, unloaded "
                      f"{(job['queue_position'] + 1) * LATENCY_S:.2f}s")
        finally:
            wait_jobs(client, warm_up + ids)  # the next test starts from an idle worker


def test_workers_record_every_route_walk_for_the_slot_overhead(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    client = redis.Redis.from_url(stack.env["IMGQ_REDIS_URL"])
    client.delete(keys.WALKS)
    with stack.client(api_key) as http:
        jobs = wait_jobs(http, submit(http, 3, "walk"))
    walks = telemetry.route_walks(client)
    assert len(walks) == 3
    # One 0.3 s call each; the walk is the call plus its admission, not the job's other work:
    # it starts after its job started (loaded from the database) and ends before the job
    # finished (its image stored). One slot: each job's window holds exactly one walk.
    for job in jobs.values():
        started_s, finished_s = _epoch(job["started_at"]), _epoch(job["finished_at"])
        inside = [w for w in walks if started_s - 0.001 <= w.at_s - w.duration_s
                  and w.at_s <= finished_s + 0.001]
        assert len(inside) == 1, (job, walks)
        assert LATENCY_S <= inside[0].duration_s < finished_s - started_s, (job, inside)
        print(f"walk {inside[0].duration_s:.3f}s of a job held {finished_s - started_s:.3f}s")


def _epoch(moment: str) -> float:
    parsed = datetime.fromisoformat(moment)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def test_workers_take_jobs_in_index_order(stack: RunningStack, api_key: str,
                                          fixed_latency: str) -> None:
    """Bulk jobs queued first still start after later interactive ones, and tenants take turns
    in the bulk lane: the order of starts is exactly the order of published positions."""
    queue = local_queue(stack)
    other_key = stack.new_tenant("order-other")
    with queue.sessions() as session:
        tenant = tenant_for_api_key(session, api_key)
        other = tenant_for_api_key(session, other_key)
        assert tenant is not None and other is not None
    stack.stop("scheduler")
    try:
        big = [queue.submit(tenant.id, JobRequest(prompt=f"bulk-big {k}", model="gpt-image-1.5",
                                                  lane="bulk")).id for k in range(4)]
        small = [queue.submit(other.id, JobRequest(
            prompt=f"bulk-small {k}", model="gpt-image-1.5", lane="bulk")).id for k in range(2)]
        with stack.client(api_key) as client:
            interactive = submit(client, 3, "order-interactive")
            ids = big + small + interactive
            positions = {j: queue.get(other.id if j in small else tenant.id, j).queue_position
                         for j in ids}
    finally:
        stack.start_scheduler()
    assert [positions[j] for j in interactive] == [0, 1, 2]
    assert [positions[j] for j in big[:2] + small] == [3, 5, 4, 6]
    done = {j: _wait_db(queue, j) for j in ids}
    by_position = sorted(ids, key=lambda j: positions[j])
    by_start = sorted(ids, key=lambda j: done[j])
    assert by_start == by_position


def _wait_db(queue: JobQueue, job_id: str, timeout_s: float = 60) -> Any:
    def started_at() -> Any:
        with queue.sessions() as session:
            job = session.get(Job, job_id)
            return job.started_at if job is not None and job.status in TERMINAL else None

    return wait_until(started_at, f"{job_id} finishes", timeout_s, poll_s=0.1)


def test_event_stream_follows_a_job_to_the_end_and_leaks_nothing(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    with stack.client(api_key) as client:
        ahead = submit(client, 8, "stream-ahead")
        job_id = submit(client, 1, "streamed")[0]
        events: list[dict[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events", timeout=60) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
        statuses = [e["status"] for e in events]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded"
        positions = [e["queue_position"] for e in events if e["queue_position"] is not None]
        assert positions == sorted(positions, reverse=True) and len(positions) >= 2
        wait_jobs(client, ahead)

        # A client that goes away mid-stream leaves no open subscription behind.
        waiting = submit(client, 6, "stream-abandoned")
        with client.stream("GET", f"/v1/jobs/{waiting[-1]}/events", timeout=60) as response:
            lines = response.iter_lines()  # held: a dropped iterator closes the connection
            next(lines)
            assert client.get("/v1/status").json()["open_event_streams"] >= 1
        wait_until(lambda: client.get("/v1/status").json()["open_event_streams"] == 0,
                   "the abandoned stream is closed", 10, poll_s=0.2)
        wait_jobs(client, waiting)


def test_a_second_worker_shortens_published_etas(stack: RunningStack, api_key: str,
                                                  fixed_latency: str) -> None:
    def seconds_per_position(client: httpx.Client, job_id: str) -> float:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return float(job["eta_start_seconds"]) / max(1, job["queue_position"])

    with stack.client(api_key) as client:
        ids = submit(client, 60, "scale-out")
        stack.wait_snapshot()  # one that counts the 60 jobs
        before = seconds_per_position(client, ids[-1])
        stack.start_worker("worker-extra", concurrency=1)
        try:
            stack.wait_workers(2)
            wait_until(lambda: seconds_per_position(client, ids[-1]) < 0.75 * before,
                       f"a snapshot counts the second slot (ETA per position below 0.75 x "
                       f"{before:.2f}s)", 10, poll_s=0.2)
            assert client.get("/v1/status").json()["workers"]["slots"] == 2
            wait_jobs(client, ids, timeout_s=120)
        finally:
            stack.stop("worker-extra")


def test_a_standby_scheduler_takes_over_when_the_active_one_dies(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    redis_client = stack.redis_client()
    holder = wait_until(lambda: redis_client.get(keys.DISPATCH_LEASE),
                        "the active scheduler holds the dispatcher lease", 10)
    stack.start_scheduler("standby")
    active = stack.procs.pop("scheduler")
    os.kill(active.pid, signal.SIGKILL)
    active.wait()
    try:
        with stack.client(api_key) as client:
            ids = submit(client, 3, "after-failover")
            jobs = wait_jobs(client, ids, timeout_s=60)
        assert [j["status"] for j in jobs.values()] == ["succeeded"] * 3, jobs
        taken_over = redis_client.get(keys.DISPATCH_LEASE)
        log = (stack.log_dir / "standby.log").read_text()
        assert taken_over not in (None, holder), (holder, taken_over)
        assert f"dispatcher {taken_over.decode()} is active" in log, log  # the standby's lease
        assert stack.procs["standby"].poll() is None, log
    finally:
        redis_client.close()
        stack.procs["scheduler"] = stack.procs.pop("standby")



def jsonl(n: int, prefix: str) -> bytes:
    return "".join(json.dumps({"custom_id": f"{prefix}-{k}", "prompt": f"{prefix} {k}",
                               "model": "gpt-image-1.5"}) + "\n" for k in range(n)).encode()


def test_two_tenants_batches_interleave_and_interactive_jobs_go_first(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    small_key = stack.new_tenant("small-batcher")
    stack.stop("scheduler")
    try:
        with stack.client(api_key) as big, stack.client(small_key) as small:
            big_batch = big.post("/v1/batches", content=jsonl(30, "big")).json()
            small_batch = small.post("/v1/batches", content=jsonl(5, "small")).json()
            urgent = submit(small, 1, "urgent")[0]
            assert small.get(f"/v1/jobs/{urgent}").json()["queue_position"] == 0
            big_first = [json.loads(line)["job_id"] for line in big.get(
                f"/v1/batches/{big_batch['id']}/results").text.splitlines()[:5]]
            small_all = [json.loads(line)["job_id"] for line in small.get(
                f"/v1/batches/{small_batch['id']}/results").text.splitlines()]
            big_pos = [big.get(f"/v1/jobs/{j}").json()["queue_position"] for j in big_first]
            small_pos = [small.get(f"/v1/jobs/{j}").json()["queue_position"] for j in small_all]
    finally:
        stack.start_scheduler()
    # The 5-job batch does not wait behind the 30-job one: the tenants take turns.
    # Whichever tenant's turn comes first, the two batches alternate job by job.
    merged = sorted([(p, "big") for p in big_pos] + [(p, "small") for p in small_pos])
    assert [p for p, _ in merged] == list(range(merged[0][0], merged[0][0] + 10))
    owners = [o for _, o in merged]
    assert all(a != b for a, b in zip(owners, owners[1:], strict=False)), merged
    with stack.client(api_key) as big:
        deadline = time.monotonic() + 60
        while (batch := big.get(f"/v1/batches/{big_batch['id']}").json())["status"] != "completed":
            assert time.monotonic() < deadline, (batch, stack.logs())
            time.sleep(0.3)


def test_batch_events_stream_counts_and_eta_until_completed(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    with stack.client(api_key) as client:
        batch = client.post("/v1/batches", content=jsonl(12, "streamed-batch")).json()
        wait_until(lambda: client.get(f"/v1/batches/{batch['id']}").json()["eta_last_job_s"]
                   is not None, "a snapshot covers the batch", 10)
        events = []
        with client.stream("GET", f"/v1/batches/{batch['id']}/events", timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    assert events[-1]["status"] == "completed"
    assert events[-1]["request_counts"]["succeeded"] == 12
    done = [e["request_counts"]["succeeded"] for e in events]
    assert done == sorted(done) and len(set(done)) >= 3


def test_imgq_status_follow_prints_position_and_eta_until_done(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    import subprocess
    import sys

    with stack.client(api_key) as client:
        submit(client, 6, "follow-ahead")
        job_id = submit(client, 1, "followed")[0]
    out = subprocess.run(
        [sys.executable, "-m", "cli", "status", job_id, "--follow", "--api-url", stack.api_url,
         "--api-key", api_key], capture_output=True, text=True, timeout=60, env=stack.env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any("queued · position" in line and "ready in" in line for line in lines), out.stdout
    assert any("succeeded" in line and "served by gpt-image-1.5" in line for line in lines)


def test_a_lost_dispatch_is_put_back_and_a_stale_message_never_runs_a_job_twice(
        stack: RunningStack, api_key: str, fixed_latency: str) -> None:
    from celery import Celery

    queue = local_queue(stack)
    stack.stop("scheduler")
    try:
        with stack.client(api_key) as client:
            job_id = submit(client, 1, "lost-dispatch")[0]
        # A dispatcher that popped the job and died before sending its message.
        taken, stale_token = queue.index.take(1)
        assert taken == [job_id]
    finally:
        stack.start_scheduler()
    with stack.client(api_key) as client:
        assert wait_jobs(client, [job_id], timeout_s=30)[job_id]["status"] == "succeeded"
    # The old message turns up after all: the worker sees a dispatch that is no longer live.
    sender = Celery("late", broker=stack.env["IMGQ_REDIS_URL"])
    sender.send_task("imgq.generate", args=[job_id, stale_token], queue="imgq")
    stack.wait_idle()  # the worker has taken the old message and its task has returned
    calls = httpx.get(f"{fixed_latency}/_sim/calls", timeout=5).json()["calls"]
    assert [c["prompt"] for c in calls].count("lost-dispatch 0") == 1
