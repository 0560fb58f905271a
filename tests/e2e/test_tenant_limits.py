"""Per-tenant limits on the real stack: API, a Celery worker with four slots and the dispatcher,
each its own process, on PostgreSQL and real Redis, the simulator answering after a fixed delay.

A tenant capped at one running job never has two in flight while another tenant's jobs run
beside it; a tenant flooding the bulk lane does not keep another's job waiting past one slot;
the budget refuses new jobs while accepted ones run and are settled with their real cost; the
queued cap accepts again once jobs finish.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from cli.lab.stack import RunningStack, wait_jobs
from cli.stack import wait_until
from providers.catalogue import load_catalogue
from scheduler.queue.index import WaitingIndex
from scheduler.tenants.quotas import running_caps
from storage.db import make_engine, make_sessionmaker
from storage.models import Job, Tenant
from tests.e2e.conftest import stack_on_each_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MODEL = "gpt-image-1.5"
PRICE = load_catalogue().models[MODEL].price_per_image_usd
TERMINAL = ("succeeded", "failed", "canceled")
BUFFER = 1  # the stack's IMGQ_DISPATCH_BUFFER (the default)


@pytest.fixture(scope="module", params=["postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    yield from stack_on_each_database(request, tmp_path_factory, redis_url, simulator_url,
                                      "limits", concurrency=4,
                                      extra_env={"IMGQ_TENANT_LIMITS_REFRESH_S": "1"})


@pytest.fixture()
def clients(stack: RunningStack) -> Iterator[Callable[..., httpx.Client]]:
    """Make a tenant (``imgq tenant create NAME OPTIONS``) and a client with its key; every
    client is closed at the end of the test."""
    made: list[httpx.Client] = []

    def make(name: str, *limits: str) -> httpx.Client:
        made.append(stack.client(stack.new_tenant(name, *limits)))
        return made[-1]

    yield make
    for client in made:
        client.close()


def latency(simulator: str, seconds: float, **errors: float) -> None:
    entry = {"latency": {"median_s": seconds, "sigma": 0.0}}
    models: dict[str, Any] = {"default": entry}
    if errors:
        models[MODEL] = {**entry, "errors": errors}
    httpx.put(f"{simulator}/_sim/profile", json={"models": models}, timeout=5).raise_for_status()


def submit(client: httpx.Client, count: int, prefix: str, **extra: Any) -> list[str]:
    ids = []
    for k in range(count):
        answer = client.post("/v1/jobs", json={"prompt": f"{prefix} {k}", "model": MODEL, **extra})
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
    return ids


def tenant_id(stack: RunningStack, name: str) -> str:
    engine = make_engine(stack.env["IMGQ_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            return str(session.scalar(select(Tenant.id).where(Tenant.name == name)))
    finally:
        engine.dispose()


def times(stack: RunningStack, ids: list[str]) -> dict[str, tuple[datetime, datetime]]:
    """Each job's (started_at, finished_at) as the database holds them."""
    engine = make_engine(stack.env["IMGQ_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            rows = session.execute(select(Job.id, Job.started_at, Job.finished_at)
                                   .where(Job.id.in_(ids))).all()
    finally:
        engine.dispose()
    return {r.id: (r.started_at, r.finished_at) for r in rows}


def test_max_running_1_holds_one_tenant_to_one_slot_while_another_runs_alongside(
        stack: RunningStack, simulator: str, clients: Callable[..., httpx.Client]) -> None:
    latency(simulator, 0.3)
    capped, neighbour = clients("capped", "--max-running", "1"), clients("neighbour")
    capped_id = tenant_id(stack, "capped")
    client = redis.Redis.from_url(stack.env["IMGQ_REDIS_URL"])
    index = WaitingIndex(client)
    assert running_caps(client).get(capped_id) == 1  # `imgq tenant create` published it
    try:
        first = submit(capped, 6, "capped")  # at the head of the queue, before the neighbour's
        second = submit(neighbour, 6, "neighbour")
        most: dict[str, int] = {}

        def sample() -> bool:
            for tenant, count in index.inflight_by_tenant().items():
                most[tenant] = max(most.get(tenant, 0), count)
            states = [capped.get(f"/v1/jobs/{j}").json()["status"] for j in first[-1:]]
            return states[0] in TERMINAL

        wait_until(sample, "the capped tenant's last job finished", 60, poll_s=0.02)
        wait_jobs(neighbour, second)
    finally:
        client.close()
    assert most[capped_id] == 1, most
    assert max(most.values()) >= 2, most  # the neighbour ran several at once beside it

    spans = times(stack, first)
    ordered = sorted(spans.values())
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:], strict=False)), ordered
    beside = times(stack, second)
    assert any(s < f_capped and s_capped < f for s, f in beside.values()
               for s_capped, f_capped in spans.values()), "nothing ran alongside"
    assert (capped.get("/v1/limits").json()["max_running"] == {"limit": 1, "used": 0})


def test_a_flood_in_the_bulk_lane_does_not_hold_back_another_tenants_job(
        stack: RunningStack, simulator: str, clients: Callable[..., httpx.Client]) -> None:
    latency(simulator, 0.3)
    flood, small = clients("flood"), clients("small")
    lines = "".join(f'{{"custom_id": "f{k}", "prompt": "flood {k}", "model": "{MODEL}"}}\n'
                    for k in range(80)).encode()
    batch = flood.post("/v1/batches", content=lines, headers={"Content-Type": "application/jsonl"})
    assert batch.status_code == 202, batch.text
    batch_id = batch.json()["id"]
    wait_until(lambda: flood.get(f"/v1/batches/{batch_id}").json()["request_counts"]["running"] >= 4,
               "the flood filled every slot")

    interactive = submit(small, 1, "small")
    one = f'{{"custom_id": "s", "prompt": "small bulk", "model": "{MODEL}"}}\n'.encode()
    bulk = small.post("/v1/batches", content=one, headers={"Content-Type": "application/jsonl"})
    assert bulk.status_code == 202
    bulk_job = json.loads(small.get(f"/v1/batches/{bulk.json()['id']}/results").text)["job_id"]
    mine = [*interactive, bulk_job]
    wait_jobs(small, mine, 30)
    flood_rows = [json.loads(line) for line in flood.get(
        f"/v1/batches/{batch_id}/results").text.splitlines()]
    flood_spans = times(stack, [r["job_id"] for r in flood_rows])
    engine = make_engine(stack.env["IMGQ_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            created = {r.id: r.created_at for r in session.execute(
                select(Job.id, Job.created_at).where(Job.id.in_(mine))).all()}
    finally:
        engine.dispose()
    flood.delete(f"/v1/batches/{batch_id}").raise_for_status()
    for job_id, (started, _) in times(stack, mine).items():
        # Between the job's arrival and its start, at most the flood's job already handed to
        # the broker (the dispatch buffer) and the one whose slot it waited for: one slot-turn.
        jumped = [s for s, _ in flood_spans.values()
                  if s is not None and created[job_id] < s < started]
        assert len(jumped) <= BUFFER + 1, (job_id, len(jumped))


def test_the_budget_refuses_new_jobs_while_accepted_ones_run_and_settles_their_real_cost(
        stack: RunningStack, simulator: str, clients: Callable[..., httpx.Client]) -> None:
    latency(simulator, 1.0)
    name = "spender"
    client = clients(name, "--budget-usd", f"{2 * PRICE}")
    accepted = submit(client, 2, "paid")
    wait_until(lambda: client.get(f"/v1/jobs/{accepted[0]}").json()["status"] == "running",
               "the first job runs")
    refused = client.post("/v1/jobs", json={"prompt": "one too many", "model": MODEL})
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "budget_exceeded"
    assert int(refused.headers["Retry-After"]) > 0
    assert "per month" in refused.json()["error"]["message"]

    done = wait_jobs(client, accepted)  # over budget, the running and queued ones still finish
    assert {j["status"] for j in done.values()} == {"succeeded"}
    spent = sum(j["cost_usd"] for j in done.values())
    assert spent == pytest.approx(2 * PRICE)
    assert client.get("/v1/limits").json()["budget"]["used_usd"] == pytest.approx(spent)

    # A failed job gives its reservation back: with room for one more, it is refused by the
    # vendor (content policy), and the tenant's spend is what was really paid.
    latency(simulator, 0.5, content_policy=1.0)
    out = subprocess.run([sys.executable, "-m", "cli", "tenant", "set", name, "--budget-usd",
                          f"{3 * PRICE}"], env=stack.env, capture_output=True, text=True,
                         check=True).stdout
    assert "budget_usd" in out
    [failing] = submit(client, 1, "refused by the vendor")
    assert client.post("/v1/jobs", json={"prompt": "x", "model": MODEL}).status_code == 429
    job = wait_jobs(client, [failing])[failing]
    assert job["status"] == "failed" and job["error"]["type"] == "content_policy"
    wait_until(lambda: client.get("/v1/limits").json()["budget"]["used_usd"]
               == pytest.approx(spent + job["cost_usd"]), "the failed job was settled")
    assert client.post("/v1/jobs", json={"prompt": "y", "model": MODEL}).status_code == 202


def test_max_queued_accepts_again_once_jobs_finish(
        stack: RunningStack, simulator: str, clients: Callable[..., httpx.Client]) -> None:
    latency(simulator, 0.3)
    client = clients("queued2", "--max-queued", "2")
    ids = submit(client, 2, "queued")
    refused = client.post("/v1/jobs", json={"prompt": "third", "model": MODEL})
    assert refused.status_code == 429 and refused.json()["error"]["type"] == "quota_exceeded"
    wait_jobs(client, ids)

    def accepted() -> bool:
        answer = client.post("/v1/jobs", json={"prompt": "after", "model": MODEL})
        assert answer.status_code in (202, 429), answer.text
        return answer.status_code == 202

    wait_until(accepted, "a job is accepted again", 10)
    assert client.get("/v1/limits").json()["max_queued"]["used"] <= 2

