"""Workers that join and leave cleanly, on the real stack (API, scheduler and Celery worker
processes, PostgreSQL, Redis, the simulator): each live worker is listed with who it is, and a
SIGTERMed worker takes no new job, lets short jobs finish, hands long ones back to their places at
once (IMGQ_LEASE_S is 120 s here, so a lapsed lease cannot be what brings them back) and exits 0.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import httpx
import pytest
import redis
from celery.utils.nodenames import host_format
from typer.testing import CliRunner

from cli.lab.stack import RunningStack, wait_jobs
from cli.main import app
from cli.stack import wait_until
from imagequeue import keys
from scheduler.queue import heartbeats
from tests.e2e.conftest import running_stack

pytestmark = pytest.mark.slow

LEASE_S = 120.0


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str, postgres_url: str) -> Iterator[RunningStack]:
    """Two 2-thread workers on PostgreSQL, with each broker: what happens to the messages of
    handed-back jobs differs (RabbitMQ redelivers them at once, Redis after its visibility
    timeout); the jobs must run once either way."""
    env = {"IMGQ_LEASE_S": str(LEASE_S)}
    if request.param == "rabbitmq":
        env["IMGQ_BROKER_URL"] = request.getfixturevalue("rabbitmq_url")
    with running_stack(tmp_path_factory.mktemp(f"shutdown-{request.param}"), postgres_url,
                       redis_url, simulator_url, workers=2, concurrency=2, extra_env=env) as running:
        yield running


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("shutdown-co")


@pytest.fixture()
def redis_client(stack: RunningStack) -> Iterator[redis.Redis]:
    client = stack.redis_client()
    yield client
    client.close()


def node(name: str) -> str:
    return str(host_format(f"{name}@%h"))


def latency(simulator: str, seconds: float) -> None:
    httpx.put(f"{simulator}/_sim/profile", timeout=5, json={
        "models": {"default": {"latency": {"median_s": seconds, "sigma": 0.01}}}}).raise_for_status()


def running_workers(stack: RunningStack, *names: str) -> None:
    """Exactly these workers (2 threads each, the stack's settings) are up and beating."""
    for name in [n for n in stack.procs if n.startswith("worker") and n not in names]:
        stack.stop(name)
    for name in names:
        if name not in stack.procs:
            stack.start_worker(name, 2)
    client = stack.redis_client()
    try:
        wait_until(lambda: set(heartbeats.live_workers(client)) == {node(n) for n in names},
                   f"exactly {', '.join(names)} beat", 30)
    finally:
        client.close()


def submit(client: httpx.Client, tag: str, count: int) -> list[str]:
    ids = []
    for k in range(count):
        answer = client.post("/v1/jobs", json={"prompt": f"{tag} #{k}"})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def lease_owners(client: redis.Redis) -> dict[str, str]:
    """job id -> "token|host:pid" of each job a worker holds (just "token" before one does)."""
    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value
    return {text(k): text(v) for k, v in client.hgetall(keys.LEASE_OWNERS).items()}


def held_by(client: redis.Redis, pid: int) -> set[str]:
    return {job for job, owner in lease_owners(client).items() if owner.endswith(f":{pid}")}


def calls_by_prompt(simulator: str, tag: str) -> Counter[str]:
    calls = httpx.get(f"{simulator}/_sim/calls", timeout=10).json()["calls"]
    return Counter(c["prompt"] for c in calls if str(c["prompt"]).startswith(tag))


def in_flight(simulator: str, tag: str) -> int:
    calls = httpx.get(f"{simulator}/_sim/calls", timeout=10).json()["calls"]
    return sum(1 for c in calls if str(c["prompt"]).startswith(tag) and c["finished_at"] is None)


def assert_no_tracebacks(stack: RunningStack) -> None:
    for log in stack.log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        assert "Traceback" not in text, f"{log.name}:\n{text[-3000:]}"


def test_status_and_imgq_workers_list_each_worker_with_host_pid_concurrency_and_version(
        stack: RunningStack, monkeypatch: pytest.MonkeyPatch) -> None:
    running_workers(stack, "worker1", "worker2")
    expected = {node(n): stack.procs[n].pid for n in ("worker1", "worker2")}

    body = httpx.get(f"{stack.api_url}/v1/status", timeout=30).json()["workers"]
    assert (body["alive"], body["slots"], body["draining"]) == (2, 4, 0)
    nodes = {w["name"]: w for w in body["nodes"]}
    assert {name: w["pid"] for name, w in nodes.items()} == expected
    for w in nodes.values():
        assert (w["host"], w["concurrency"], w["version"], w["draining"], w["running"]) == (
            socket.gethostname(), 2, version("imagequeue"), False, 0)
        assert w["started_at"] is not None and 0 <= w["last_beat_seconds_ago"] < 5

    monkeypatch.setenv("IMGQ_REDIS_URL", stack.env["IMGQ_REDIS_URL"])
    result = CliRunner().invoke(app, ["workers", "--json"])
    assert result.exit_code == 0, result.output
    listed = {w["name"]: w for w in json.loads(result.stdout)["workers"]}
    assert {name: (w["pid"], w["host"], w["concurrency"], w["version"])
            for name, w in listed.items()} == {
        name: (pid, socket.gethostname(), 2, version("imagequeue")) for name, pid in expected.items()}
    table = CliRunner().invoke(app, ["workers"])
    assert table.exit_code == 0, table.output
    assert "2 live workers" in table.stdout
    for name, pid in expected.items():
        assert name in table.stdout and str(pid) in table.stdout


def test_a_sigtermed_worker_finishes_its_short_jobs_once_takes_no_new_one_and_exits_0(
        stack: RunningStack, api_key: str, simulator: str, redis_client: redis.Redis) -> None:
    running_workers(stack, "worker1", "worker2")
    latency(simulator, 2.5)
    victim = stack.procs["worker1"]
    with stack.client(api_key) as client:
        ids = submit(client, "short", 4)  # two on each worker
        wait_until(lambda: len(held_by(redis_client, victim.pid)) == 2, "worker1 runs two jobs",
                   30)
        wait_until(lambda: in_flight(simulator, "short") == 4, "the four calls are made", 30)

        victim.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        draining = wait_until(lambda: getattr(heartbeats.live_workers(redis_client).get(
            node("worker1")), "draining", False), "worker1 says it is draining", 5, poll_s=0.02)
        assert draining and heartbeats.total_slots(heartbeats.live_workers(redis_client)) == 2
        later = submit(client, "after", 2)  # for worker2 alone
        code = victim.wait(timeout=25)
        took_s = time.monotonic() - sent
        jobs = wait_jobs(client, ids + later)
    stack.procs.pop("worker1")

    assert code == 0
    assert took_s < 10, took_s  # the jobs' own length, far below the 30 s grace
    assert node("worker1") not in heartbeats.live_workers(redis_client)
    for job_id in ids + later:
        assert jobs[job_id]["status"] == "succeeded", jobs[job_id]
        assert [a["outcome"] for a in jobs[job_id]["attempts"]] == ["success"], jobs[job_id]
    assert set(calls_by_prompt(simulator, "short").values()) == {1}
    assert set(calls_by_prompt(simulator, "after").values()) == {1}
    log = (stack.log_dir / "worker1.log").read_text(errors="replace")
    assert "handed back" not in log, log[-3000:]
    after_sigterm = log.rpartition("Warm shutdown")[2]
    assert " received" not in after_sigterm, after_sigterm  # no new task reached it
    assert_no_tracebacks(stack)


def test_jobs_that_outlast_the_grace_go_back_at_once_and_run_once_elsewhere(
        stack: RunningStack, api_key: str, simulator: str, redis_client: redis.Redis) -> None:
    running_workers(stack)
    stack.start_worker("leaver", 2, env={**stack.env, "IMGQ_WORKER_SHUTDOWN_GRACE_S": "1"})
    leaver = stack.procs["leaver"]
    wait_until(lambda: node("leaver") in heartbeats.live_workers(redis_client),
               "the leaving worker beats", 30)
    latency(simulator, 20.0)
    with stack.client(api_key) as client:
        ids = submit(client, "long", 2)
        wait_until(lambda: held_by(redis_client, leaver.pid) == set(ids), "it runs both jobs", 30)
        wait_until(lambda: in_flight(simulator, "long") == 2, "both 20 s calls are under way", 30)
        latency(simulator, 0.2)  # the re-runs are quick; the calls under way keep their 20 s
        stack.start_worker("worker1", 2)
        wait_until(lambda: node("worker1") in heartbeats.live_workers(redis_client),
                   "another worker beats", 30)

        leaver.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = leaver.wait(timeout=15)
        exited_s = time.monotonic() - sent

        def elsewhere() -> bool:
            owners = lease_owners(redis_client)
            states = {j: client.get(f"/v1/jobs/{j}").json()["status"] for j in ids}
            return all(states[j] == "succeeded" or ("|" in owners.get(j, "")
                       and not owners[j].endswith(f":{leaver.pid}")) for j in ids)
        wait_until(elsewhere, "both jobs run on the other worker", 30, poll_s=0.05)
        back_s = time.monotonic() - sent
        jobs = wait_jobs(client, ids)
    stack.procs.pop("leaver")

    assert code == 0
    assert exited_s < 1 + 4, exited_s  # about the grace
    assert back_s < 10 < LEASE_S, back_s  # handed back, not lapsed
    assert node("leaver") not in heartbeats.live_workers(redis_client)
    calls = calls_by_prompt(simulator, "long")
    for job_id in ids:
        job: dict[str, Any] = jobs[job_id]
        outcomes = [a["outcome"] for a in job["attempts"]]
        assert job["status"] == "succeeded" and sorted(outcomes) == ["lost", "success"], job
        assert calls[job["prompt"]] == len(outcomes) == 2, (calls, job)  # billed = on record
    log = (stack.log_dir / "leaver.log").read_text(errors="replace")
    assert "2 jobs still running handed back" in log, log[-3000:]
    assert_no_tracebacks(stack)
