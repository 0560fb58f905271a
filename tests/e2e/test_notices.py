"""The end user's notice on a real stack: Gemini 3 Pro Image is down in the simulator, and every
place a job's outcome is read says so in one sentence: the job, its event stream, its webhook,
the batch's result lines, the batch itself and the batch's webhook.

The breaker is off here, so that every job calls the dead model and the sentence is the same for
all of them (with the breaker on, later jobs would read "unavailable" instead of "overloaded").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cli.lab.stack import RunningStack, sim_profile, wait_jobs
from cli.stack import wait_until
from tests.e2e.conftest import stack_on_each_database
from tests.e2e.test_batches import Receiver, jsonl, wait_batch

pytestmark = pytest.mark.slow

GEMINI, FLASH = "gemini-3-pro-image-preview", "gemini-2.5-flash-image"
FALLBACK_NOTICE = "Made with Gemini 2.5 Flash Image because Gemini 3 Pro Image is overloaded right now."


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    yield from stack_on_each_database(
        request, tmp_path_factory, redis_url, simulator_url, "notices", concurrency=4,
        extra_env={"IMGQ_BREAKER_MODE": "off", "IMGQ_WEBHOOK_ALLOW_LOOPBACK": "true",
                   "IMGQ_WEBHOOK_POLL_INTERVAL_S": "0.1", "IMGQ_JOB_DEADLINE_S": "10",
                   "IMGQ_PARK_BACKOFF_S": "0.5"})


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("notices")


@pytest.fixture()
def client(stack: RunningStack, api_key: str, simulator: str) -> Iterator[httpx.Client]:
    sim_profile(simulator, outage_on=GEMINI)  # every call to it: 503 "overloaded"
    with stack.client(api_key) as http:
        yield http


def job_events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every ``job`` event of the job's stream, until it closes (at once for an ended job)."""
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
    return events


def test_a_job_served_by_a_fallback_says_so_on_the_job_its_stream_and_its_webhook(
        client: httpx.Client) -> None:
    receiver = Receiver()
    try:
        created = client.post("/v1/jobs", json={"prompt": "a lighthouse at dawn",
                                                "webhook_url": receiver.url})
        assert created.status_code == 202, created.text
        assert created.json()["notice"] is None  # nothing has happened yet
        job = wait_jobs(client, [created.json()["id"]])[created.json()["id"]]
        receiver.wait(1)
    finally:
        receiver.close()

    assert (job["status"], job["served_by"], job["degraded"]) == ("succeeded", FLASH, True)
    assert [(a["model"], a["outcome"]) for a in job["attempts"]] == [
        (GEMINI, "overloaded"), (FLASH, "success")]
    assert job["notice"] == FALLBACK_NOTICE
    assert job_events(client, job["id"])[-1]["notice"] == FALLBACK_NOTICE
    webhook = json.loads(receiver.requests[0][1])
    assert (webhook["type"], webhook["data"]["notice"]) == ("job.succeeded", FALLBACK_NOTICE)


def test_every_result_line_of_a_batch_and_its_webhook_carry_the_notice(
        client: httpx.Client) -> None:
    lines = [{"custom_id": "fallback-1", "prompt": "a fox"},
             {"custom_id": "fallback-2", "prompt": "an owl"},
             {"custom_id": "as-asked", "prompt": "a whale", "model": FLASH},
             {"custom_id": "refused", "prompt": "[sim:invalid_request] a cat"}]
    receiver = Receiver()
    try:
        created = client.post("/v1/batches", params={"webhook_url": receiver.url},
                              content=jsonl(lines))
        assert created.status_code == 202, created.text
        batch = wait_batch(client, created.json()["id"])
        receiver.wait(1)
    finally:
        receiver.close()

    rows = {r["custom_id"]: r for r in map(json.loads, client.get(
        f"/v1/batches/{batch['id']}/results").text.splitlines())}
    assert {k: (r["status"], r["notice"]) for k, r in rows.items()} == {
        "fallback-1": ("succeeded", FALLBACK_NOTICE),
        "fallback-2": ("succeeded", FALLBACK_NOTICE),
        "as-asked": ("succeeded", None),  # pinned to Flash, served by it: nothing degraded
        "refused": ("failed", None),  # the request itself was refused: its error says why
    }
    assert rows["refused"]["error"]["type"] == "invalid_request"
    summary = "2 of 4 images were made with a fallback model; each result's notice says why."
    assert (batch["status"], batch["degraded"], batch["notice"]) == ("completed", 2, summary)
    webhook = json.loads(receiver.requests[0][1])
    assert (webhook["type"], webhook["data"]["notice"]) == ("batch.completed", summary)


def test_a_job_no_model_could_serve_says_so_while_it_waits_and_when_it_fails(
        client: httpx.Client) -> None:
    created = client.post("/v1/jobs", json={"prompt": "pinned to the dead model", "model": GEMINI})
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]

    def parked() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] == "queued" and job["notice"] else None

    waiting = wait_until(parked, "the pinned job is parked with a notice", 15)
    assert waiting["notice"] == ("Gemini 3 Pro Image is overloaded right now; your image will be "
                                 "made as soon as it is back.")
    failed = wait_jobs(client, [job_id], timeout_s=30)[job_id]
    assert failed["error"]["type"] == "all_models_unavailable"
    assert failed["notice"] == ("Gemini 3 Pro Image is overloaded right now; try again in a few "
                                "minutes.")
