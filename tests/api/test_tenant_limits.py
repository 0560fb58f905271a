"""Per-tenant limits as an HTTP client meets them: a real API process (uvicorn, SQLite, the test
Redis, no workers), tenants made with ``imgq tenant create``, every answer read off the wire.

Over a limit: 429, ``Retry-After``, the one error shape naming the limit and when it resets; and
every answer carries the requests-per-minute limit's RateLimit fields, counting down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from cli.stack import free_port, spawn, stop_process, wait_http
from providers.catalogue import load_catalogue
from storage.db import migrate

pytestmark = pytest.mark.timeout(120)
MODEL = "gpt-image-1.5"
PRICE = load_catalogue().models[MODEL].price_per_image_usd
JOB = {"prompt": "a lighthouse at dawn", "model": MODEL}


@dataclass
class Api:
    url: str
    env: dict[str, str]
    other_url: str  # a second API process on the same Redis and database

    def tenant(self, name: str, *limits: str) -> httpx.Client:
        """A tenant made the way an operator makes one, and a client with its key."""
        out = subprocess.run([sys.executable, "-m", "cli", "tenant", "create", name, *limits],
                             env={**os.environ, **self.env}, capture_output=True, text=True,
                             check=True)
        key = out.stdout.strip().splitlines()[-1]
        return httpx.Client(base_url=self.url, timeout=15,
                            headers={"Authorization": f"Bearer {key}"})

    def set(self, name: str, *limits: str) -> str:
        return subprocess.run([sys.executable, "-m", "cli", "tenant", "set", name, *limits],
                              env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=True).stdout


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Api]:
    root: Path = tmp_path_factory.mktemp("limits")
    database_url = f"sqlite:///{root / 'imgq.db'}"
    migrate(database_url)
    redis.Redis.from_url(redis_url).flushdb()
    ports = [free_port(), free_port()]
    env = {"IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": redis_url,
           "IMGQ_IMAGE_DIR": str(root / "images"),
           "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{ports[0]}",
           "IMGQ_TENANT_QUEUED_RETRY_AFTER_S": "7"}
    procs = [spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                    "--port", str(port), "--log-level", "warning"], env=env,
                   log=root / f"api-{port}.log") for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield Api(f"http://127.0.0.1:{ports[0]}", env, f"http://127.0.0.1:{ports[1]}")
    finally:
        for proc in procs:
            stop_process(proc)


def assert_refused(answer: httpx.Response, kind: str, *named: str) -> int:
    """429 in the one error shape, with Retry-After; returns the Retry-After."""
    assert answer.status_code == 429, answer.text
    body = answer.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind, body
    assert body["error"]["details"] == []
    for text in named:
        assert text in body["error"]["message"], body
    retry = int(answer.headers["Retry-After"])
    assert retry >= 1
    assert f"{retry} s" in body["error"]["message"], body  # says when it resets
    return retry


def test_requests_per_minute_count_down_then_429_with_retry_after(api: Api) -> None:
    with api.tenant("rpm5", "--rpm", "5") as client, api.tenant("neighbour", "--rpm", "5") as other:
        elsewhere = httpx.Client(base_url=api.other_url, headers=client.headers, timeout=15)
        started = time.monotonic()
        seen = []
        for k in range(5):  # every request counts, reads too, on either API process
            answer = (client.post("/v1/jobs", json=JOB) if k % 2 == 0
                      else elsewhere.get("/v1/batches"))
            assert answer.status_code in (200, 202), answer.text
            seen.append(answer.headers)
        assert [h["RateLimit-Limit"] for h in seen] == ["5"] * 5
        assert [int(h["RateLimit-Remaining"]) for h in seen] == [4, 3, 2, 1, 0]
        resets = [int(h["RateLimit-Reset"]) for h in seen]
        assert all(0 < r <= 60 for r in resets) and resets == sorted(resets, reverse=True)
        assert seen[0]["RateLimit-Policy"] == "5;w=60"

        refused = client.post("/v1/jobs", json=JOB)
        retry = assert_refused(refused, "rate_limited", "rpm", "5 requests per minute")
        elapsed = time.monotonic() - started
        # Free again when the first request of the minute leaves the window.
        assert 60 - elapsed - 1 <= retry <= 60
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert int(refused.headers["RateLimit-Reset"]) == retry
        assert client.get("/v1/batches").status_code == 429  # reads are refused too
        assert elsewhere.get("/v1/batches").status_code == 429  # one count for the cluster
        elsewhere.close()

        fresh = other.get("/v1/batches")  # another tenant has a minute of its own
        assert fresh.status_code == 200 and fresh.headers["RateLimit-Remaining"] == "4"

        api.set("rpm5", "--rpm", "100")  # raised: the next request is under the new limit
        answer = client.get("/v1/batches")
        assert answer.status_code == 200, answer.text
        assert answer.headers["RateLimit-Limit"] == "100"


def test_every_answer_carries_the_rate_fields_and_no_limit_means_none(api: Api) -> None:
    with api.tenant("fields") as client, api.tenant("unlimited", "--rpm", "0") as free:
        missing = client.get("/v1/jobs/job_nope")
        assert missing.status_code == 404
        assert missing.headers["RateLimit-Limit"] == "600"  # the default
        stream = client.get("/v1/batches/batch_nope/results")
        assert stream.status_code == 404 and "RateLimit-Remaining" in stream.headers
        assert "RateLimit-Limit" not in free.get("/v1/batches").headers
        assert "RateLimit-Limit" not in httpx.get(f"{api.url}/healthz").headers


def test_max_queued_refuses_a_job_or_a_whole_batch_over_it_and_accepts_again(api: Api) -> None:
    with api.tenant("queued3", "--max-queued", "3") as client:
        jobs = [client.post("/v1/jobs", json=JOB) for _ in range(3)]
        assert [j.status_code for j in jobs] == [202] * 3
        retry = assert_refused(client.post("/v1/jobs", json=JOB), "quota_exceeded",
                               "max_queued", "at most 3 jobs")
        assert retry == 7

        client.delete(f"/v1/jobs/{jobs[0].json()['id']}").raise_for_status()  # one ends
        two = b'{"custom_id": "a", "prompt": "a cat"}\n{"custom_id": "b", "prompt": "a dog"}\n'
        batch = client.post("/v1/batches", content=two,
                            headers={"Content-Type": "application/jsonl"})
        assert_refused(batch, "quota_exceeded", "adds 2", "room for 1")
        assert client.get("/v1/batches").json()["data"] == []  # refused whole: nothing stored

        one = b'{"custom_id": "a", "prompt": "a cat"}\n'
        batch = client.post("/v1/batches", content=one,
                            headers={"Content-Type": "application/jsonl"})
        assert batch.status_code == 202, batch.text
        assert client.get("/v1/limits").json()["max_queued"] == {"limit": 3, "used": 3}
        client.delete(f"/v1/batches/{batch.json()['id']}").raise_for_status()  # a canceled batch
        assert client.post("/v1/jobs", json=JOB).status_code == 202  # frees its room


def test_the_budget_refuses_new_jobs_until_its_period_ends(api: Api) -> None:
    budget = 2 * PRICE
    with api.tenant("budget", "--budget-usd", f"{budget}", "--budget-period", "day") as client:
        first = client.post("/v1/jobs", json=JOB)
        assert first.status_code == 202, first.text
        assert client.post("/v1/jobs", json={**JOB, "n": 2}).status_code == 429  # 3 x price
        second = client.post("/v1/jobs", json=JOB)
        assert second.status_code == 202
        refused = client.post("/v1/jobs", json=JOB)
        now = datetime.now(UTC)
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        retry = assert_refused(refused, "budget_exceeded", "per day",
                               midnight.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert abs(retry - (midnight - now).total_seconds()) <= 2

        usage = client.get("/v1/limits").json()["budget"]
        assert usage["limit_usd"] == pytest.approx(budget)
        assert usage["used_usd"] == pytest.approx(budget)
        assert usage["period"] == "day"

        client.delete(f"/v1/jobs/{first.json()['id']}").raise_for_status()  # gives back its share
        assert client.get("/v1/limits").json()["budget"]["used_usd"] == pytest.approx(PRICE)
        assert client.post("/v1/jobs", json=JOB).status_code == 202

        api.set("budget", "--budget-usd", "0")  # 0: no budget
        assert client.post("/v1/jobs", json=JOB).status_code == 202


def test_the_openapi_schema_documents_the_429_and_the_rate_fields(api: Api) -> None:
    schema = httpx.get(f"{api.url}/openapi.json").json()
    submit = schema["paths"]["/v1/jobs"]["post"]["responses"]
    assert "Retry-After" in submit["429"]["headers"]
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
        submit["202"]["headers"])
    assert "429" not in schema["paths"]["/healthz"]["get"]["responses"]
