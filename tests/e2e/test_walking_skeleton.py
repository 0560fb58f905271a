"""A job goes from the HTTP API through the dispatcher and a real Celery worker to a stored image."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest
import sqlalchemy
from PIL import Image

from cli.lab.stack import RunningStack, wait_jobs


def wait_terminal(client: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    return wait_jobs(client, [job_id], timeout_s)[job_id]


def simulator_prompts(simulator_url: str) -> list[str]:
    calls = httpx.get(f"{simulator_url}/_sim/calls", timeout=5).json()["calls"]
    return [c["prompt"] for c in calls]


def job_count(stack: RunningStack) -> int:
    engine = sqlalchemy.create_engine(stack.env["IMGQ_DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.execute(sqlalchemy.text("SELECT count(*) FROM jobs")).scalar_one()
    engine.dispose()
    return int(count)


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("acme")


def test_job_is_served_and_its_png_has_the_requested_size(stack: RunningStack, api_key: str) -> None:
    with stack.client(api_key) as client:
        created = client.post("/v1/jobs", json={"prompt": "A red fox in snow, watercolor 🦊",
                                                "size": "1536x1024", "model": "gpt-image-1.5"})
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "queued"
        job = wait_terminal(client, created.json()["id"])
        assert job["status"] == "succeeded", (job, stack.logs())
        assert job["served_by"] == "gpt-image-1.5"
        assert job["degraded"] is False
        assert len(job["attempts"]) == 1
        assert job["attempts"][0]["outcome"] == "success"
        assert job["attempts"][0]["latency_ms"] is not None
        image = client.get(f"/v1/jobs/{job['id']}/images/0")
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        decoded = Image.open(io.BytesIO(image.content))
        assert decoded.format == "PNG"
        assert decoded.size == (1536, 1024)


def test_canceled_job_never_reaches_a_provider(stack: RunningStack, api_key: str,
                                               simulator_url: str) -> None:
    stack.stop("scheduler")  # nothing is dispatched while the job waits
    try:
        with stack.client(api_key) as client:
            queued = client.post("/v1/jobs", json={"prompt": "cancel-me-7f3a",
                                                   "model": "gpt-image-1.5"}).json()
            assert queued["queue_position"] == 0
            canceled = client.delete(f"/v1/jobs/{queued['id']}")
            assert canceled.status_code == 200
            assert canceled.json()["status"] == "canceled"
            assert client.delete(f"/v1/jobs/{queued['id']}").status_code == 409
    finally:
        stack.start_scheduler()
    with stack.client(api_key) as client:
        after = client.post("/v1/jobs", json={"prompt": "after-cancel", "model": "gpt-image-1.5"})
        assert wait_terminal(client, after.json()["id"])["status"] == "succeeded"
        assert client.get(f"/v1/jobs/{queued['id']}").json()["status"] == "canceled"
    prompts = simulator_prompts(simulator_url)
    assert "after-cancel" in prompts
    assert "cancel-me-7f3a" not in prompts


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"size": "1024x1024"}, 422, "prompt"),
        ({"prompt": "   "}, 422, "prompt"),
        ({"prompt": "x", "model": "no-such-model"}, 422, "model"),
        ({"prompt": "x", "route": "no-such-route"}, 422, "route"),
        ({"prompt": "x" * 4001}, 422, "prompt"),
        ({"prompt": "x", "n": 0}, 422, "n"),
        ({"prompt": "x", "n": 99}, 422, "n"),
        ({"prompt": "x", "size": "big"}, 422, "size"),
        ({"prompt": "x", "colour": "red"}, 422, "colour"),
        ({"prompt": "x", "model": "gpt-image-1.5", "size": "1000x1000"}, 422, "1000x1000"),
    ],
)
def test_bad_job_is_refused_with_a_readable_error_and_no_row(
        stack: RunningStack, api_key: str, body: dict[str, Any], status: int, field: str) -> None:
    before = job_count(stack)
    with stack.client(api_key) as client:
        response = client.post("/v1/jobs", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert field in error["message"]
    assert job_count(stack) == before


def test_malformed_json_is_a_400_that_says_so(stack: RunningStack, api_key: str) -> None:
    before = job_count(stack)
    with stack.client(api_key) as client:
        response = client.post("/v1/jobs", content=b'{"prompt": "x",',
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_json"
    assert "not valid JSON" in response.json()["error"]["message"]
    assert job_count(stack) == before


@pytest.mark.parametrize("header", [None, "Bearer imgq_wrong", "Basic abc"])
def test_missing_or_wrong_api_key_is_401(stack: RunningStack, header: str | None) -> None:
    before = job_count(stack)
    headers = {"Authorization": header} if header else {}
    response = httpx.post(f"{stack.api_url}/v1/jobs", json={"prompt": "x"}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthorized"
    assert job_count(stack) == before


def test_a_tenant_never_sees_another_tenants_job(stack: RunningStack, api_key: str) -> None:
    other_key = stack.new_tenant("globex")
    with stack.client(api_key) as mine:
        job = mine.post("/v1/jobs", json={"prompt": "private fox", "model": "gpt-image-1.5"}).json()
        wait_terminal(mine, job["id"])
    with stack.client(other_key) as theirs:
        assert theirs.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert theirs.get(f"/v1/jobs/{job['id']}/images/0").status_code == 404
        assert theirs.delete(f"/v1/jobs/{job['id']}").status_code == 404


def test_openapi_schema_documents_the_job_endpoints(stack: RunningStack) -> None:
    schema = httpx.get(f"{stack.api_url}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/images/{index}"} <= set(
        schema["paths"])
