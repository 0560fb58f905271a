"""Bulk jobs end to end: a JSONL batch through the API, the dispatcher and a real worker pool to
results and a zip; line-numbered rejection; idempotent submits; signed webhooks; cancel."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy

from cli.lab.stack import RunningStack
from cli.stack import wait_until
from tests.e2e.conftest import stack_on_each_database

MAX_BATCH_BYTES = 400_000
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    """API + a 16-thread worker + the scheduler, webhooks to loopback allowed, quick retries."""
    yield from stack_on_each_database(
        request, tmp_path_factory, redis_url, simulator_url, "batches", concurrency=16,
        extra_env={"IMGQ_WEBHOOK_ALLOW_LOOPBACK": "true",
                   "IMGQ_WEBHOOK_RETRY_SCHEDULE_S": "[0.2, 0.2, 0.2]",
                   "IMGQ_WEBHOOK_POLL_INTERVAL_S": "0.1",
                   "IMGQ_MAX_BATCH_BYTES": str(MAX_BATCH_BYTES)})


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("bulk-co")


@pytest.fixture()
def client(stack: RunningStack, api_key: str) -> Iterator[httpx.Client]:
    with stack.client(api_key) as http:
        yield http


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def prompts_jsonl(count: int, tag: str) -> bytes:
    return jsonl([{"custom_id": f"{tag}-{k:05d}", "prompt": f"{tag} lighthouse {k}",
                   "size": "256x256"} for k in range(count)])


def job_count(stack: RunningStack) -> int:
    engine = sqlalchemy.create_engine(stack.env["IMGQ_DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.execute(sqlalchemy.text("SELECT count(*) FROM jobs")).scalar_one()
    engine.dispose()
    return int(count)


def wait_batch(client: httpx.Client, batch_id: str, timeout_s: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        batch: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
        return batch if batch["status"] in ("completed", "failed", "canceled") else None

    return wait_until(ended, f"batch {batch_id} ends", timeout_s, poll_s=0.2)


def simulator_prompts(simulator_url: str) -> list[str]:
    calls = httpx.get(f"{simulator_url}/_sim/calls", timeout=10).json()["calls"]
    return [c["prompt"] for c in calls]


def test_a_large_batch_completes_with_results_in_input_order_and_every_image_zipped(
        client: httpx.Client, stack: RunningStack) -> None:
    lines = 1000 if "sqlite" in stack.env["IMGQ_DATABASE_URL"] else 200
    created = client.post("/v1/batches", content=prompts_jsonl(lines, "big"),
                          headers={"Content-Type": "application/jsonl"})
    assert created.status_code == 202, created.text
    assert created.json()["request_counts"]["total"] == lines
    batch = wait_batch(client, created.json()["id"])
    assert batch["status"] == "completed", (batch, stack.logs())
    assert batch["request_counts"] | {"total": 0} == {
        "total": 0, "queued": 0, "running": 0, "succeeded": lines, "failed": 0, "canceled": 0}
    assert sum(batch["served_by"].values()) == lines
    assert batch["cost_usd"] > 0
    results = client.get(f"/v1/batches/{batch['id']}/results")
    assert results.headers["content-type"].startswith("application/jsonl")
    rows = [json.loads(line) for line in results.text.splitlines()]
    assert [r["custom_id"] for r in rows] == [f"big-{k:05d}" for k in range(lines)]
    assert [r["line"] for r in rows] == list(range(1, lines + 1))
    assert all(r["status"] == "succeeded" and len(r["images"]) == 1 for r in rows)
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/v1/batches/{batch['id']}/results.zip")
                                         .content))
    names = sorted(archive.namelist())
    # Each image is named by its custom_id; the extension is the serving model's format.
    assert [n.rsplit(".", 1)[0] for n in names] == [f"big-{k:05d}" for k in range(lines)]
    magic = {"png": b"\x89PNG", "jpg": b"\xff\xd8\xff", "webp": b"RIFF", "svg": b"<"}
    for name in names[:50]:
        assert archive.read(name).startswith(magic[name.rsplit(".", 1)[1]]), name


BAD_BATCHES = {
    "truncated line": (jsonl([{"custom_id": "a", "prompt": "x"}]) + b'{"custom_id": "b", "pro\n',
                       2, "not valid JSON"),
    "line not an object": (jsonl([{"custom_id": "a", "prompt": "x"}, ["b", "y"]]), 2,
                           "must be a JSON object"),
    "missing prompt": (jsonl([{"custom_id": "a", "prompt": "x"}, {"custom_id": "b"}]), 2,
                       "prompt is required"),
    "duplicate custom_id": (jsonl([{"custom_id": "a", "prompt": "x"}] * 2), 2,
                            "duplicate custom_id"),
    "empty file": (b"", 1, "empty"),
    "non-UTF-8 byte": (jsonl([{"custom_id": "a", "prompt": "x"}])
                       + b'{"custom_id": "b", "prompt": "caf\xe9"}\n', 2, "not valid UTF-8"),
    "oversize body": (prompts_jsonl(MAX_BATCH_BYTES // 40, "huge"), None, "larger than"),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_a_bad_batch_is_rejected_by_line_number_and_nothing_is_queued(
        client: httpx.Client, stack: RunningStack, case: str) -> None:
    body, line, reason = BAD_BATCHES[case]
    before = job_count(stack)
    response = client.post("/v1/batches", content=body)
    assert response.status_code == (413 if case == "oversize body" else 422), response.text
    error = response.json()["error"]
    assert reason in error["message"] + json.dumps(error["details"])
    if line is not None:
        assert any(d["field"].startswith(f"line {line}") for d in error["details"]), error
    else:  # refused on its Content-Length, before a byte of it was read
        assert error["details"][0]["field"] == "Content-Length"
    assert job_count(stack) == before


def test_allow_partial_queues_the_good_lines_and_returns_the_rejects(
        client: httpx.Client, stack: RunningStack) -> None:
    body = jsonl([{"custom_id": "ok-1", "prompt": "x"}, {"custom_id": "bad"},
                  {"custom_id": "ok-2", "prompt": "y"}, {"custom_id": "ok-1", "prompt": "z"}])
    before = job_count(stack)
    created = client.post("/v1/batches", params={"allow_partial": "true"}, content=body)
    assert created.status_code == 202, created.text
    batch = created.json()
    assert batch["request_counts"]["total"] == 2
    assert [(r["line"], r["field"]) for r in batch["rejected"]] == [(2, "prompt"),
                                                                    (4, "custom_id")]
    assert job_count(stack) == before + 2


def test_a_multipart_file_upload_is_a_batch_too(client: httpx.Client) -> None:
    created = client.post("/v1/batches", files={"file": ("p.jsonl", prompts_jsonl(3, "mp"))})
    assert created.status_code == 202, created.text
    assert created.json()["request_counts"]["total"] == 3


def test_a_retried_submit_returns_the_same_batch_and_a_changed_body_is_a_conflict(
        client: httpx.Client, stack: RunningStack) -> None:
    body = prompts_jsonl(5, "idem")
    first = client.post("/v1/batches", content=body, headers={"Idempotency-Key": "idem-b-1"})
    again = client.post("/v1/batches", content=body, headers={"Idempotency-Key": "idem-b-1"})
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    before = job_count(stack)
    other = client.post("/v1/batches", content=prompts_jsonl(6, "idem"),
                        headers={"Idempotency-Key": "idem-b-1"})
    assert other.status_code == 409
    assert first.json()["id"] in other.json()["error"]["message"]
    assert job_count(stack) == before


def test_concurrent_identical_submits_make_one_batch(client: httpx.Client,
                                                     stack: RunningStack) -> None:
    body = prompts_jsonl(50, "race")
    before = job_count(stack)

    def submit(_: int) -> str:
        response = client.post("/v1/batches", content=body,
                               headers={"Idempotency-Key": "idem-race"})
        assert response.status_code in (200, 202), response.text
        return str(response.json()["id"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = set(pool.map(submit, range(4)))
    assert len(ids) == 1
    assert job_count(stack) == before + 50


def test_a_retried_job_submit_returns_the_same_job_and_a_changed_body_is_a_conflict(
        client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "idem-job-1"}
    first = client.post("/v1/jobs", json={"prompt": "one fox"}, headers=headers)
    again = client.post("/v1/jobs", json={"prompt": "one fox"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json={"prompt": "two foxes"}, headers=headers)
    assert other.status_code == 409
    assert "different request" in other.json()["error"]["message"]


class Receiver:
    """A webhook receiver on 127.0.0.1 that fails the first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.requests) <= receiver.failures
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout_s: float = 30) -> None:
        wait_until(lambda: len(self.requests) >= count, f"{count} webhook requests arrive",
                   timeout_s)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def signature_is_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


def test_batch_webhook_arrives_signed_after_a_failed_attempt_and_attempts_are_visible(
        client: httpx.Client) -> None:
    receiver = Receiver(failures=1)
    try:
        created = client.post("/v1/batches", params={"webhook_url": receiver.url},
                              content=prompts_jsonl(5, "hook"))
        assert created.status_code == 202, created.text
        batch_id = created.json()["id"]
        assert wait_batch(client, batch_id)["status"] == "completed"
        receiver.wait(2)
    finally:
        receiver.close()
    secret = client.get("/v1/webhooks/secret").json()["secret"]
    (failed_headers, _), (headers, body) = receiver.requests[:2]
    assert signature_is_valid(secret, headers, body)
    assert failed_headers["webhook-id"] == headers["webhook-id"]
    event = json.loads(body)
    assert event["type"] == "batch.completed"
    assert event["data"]["id"] == batch_id
    assert event["data"]["request_counts"]["succeeded"] == 5
    deliveries = client.get("/v1/webhooks/deliveries", params={"subject_id": batch_id}).json()
    attempts = deliveries["data"][0]["attempts"]
    assert [a["response_status"] for a in attempts] == [500, 204]
    assert client.get(f"/v1/batches/{batch_id}").json()["webhook"]["status"] == "succeeded"


def test_a_single_job_webhook_arrives_signed(client: httpx.Client) -> None:
    receiver = Receiver()
    try:
        job = client.post("/v1/jobs", json={"prompt": "hooked fox", "webhook_url": receiver.url})
        assert job.status_code == 202, job.text
        receiver.wait(1)
    finally:
        receiver.close()
    headers, body = receiver.requests[0]
    assert signature_is_valid(client.get("/v1/webhooks/secret").json()["secret"], headers, body)
    assert json.loads(body)["type"] == "job.succeeded"
    assert json.loads(body)["data"]["id"] == job.json()["id"]


@pytest.mark.parametrize("url", ["http://10.0.0.5/hook", "http://169.254.169.254/latest",
                                 "http://[fd00::1]/hook"])
def test_a_private_address_webhook_is_refused_at_submit(
        client: httpx.Client, stack: RunningStack, url: str) -> None:
    before = job_count(stack)
    batch = client.post("/v1/batches", params={"webhook_url": url}, content=prompts_jsonl(2, "p"))
    job = client.post("/v1/jobs", json={"prompt": "x", "webhook_url": url})
    for response in (batch, job):
        assert response.status_code == 422, response.text
        assert "public address" in response.json()["error"]["message"]
    assert job_count(stack) == before


def test_canceling_a_running_batch_stops_new_provider_calls(
        client: httpx.Client, stack: RunningStack, simulator: str) -> None:
    """(``simulator`` empties the call log first: the same prompts ran on the other database.)"""
    simulator_url = simulator
    created = client.post("/v1/batches", content=prompts_jsonl(600, "cancel"))
    batch_id = created.json()["id"]
    wait_until(lambda: client.get(f"/v1/batches/{batch_id}").json()["request_counts"]
               ["succeeded"] >= 20, "20 jobs of the batch succeed", 60)
    canceling = client.delete(f"/v1/batches/{batch_id}")
    assert canceling.status_code == 200
    assert canceling.json()["status"] in ("canceling", "canceled")
    batch = wait_batch(client, batch_id)
    counts = batch["request_counts"]
    assert batch["status"] == "canceled"
    assert counts["canceled"] > 0 and counts["queued"] == counts["running"] == 0
    stack.wait_idle()  # every job handed to a worker is done with: no call is still on its way
    called = {p for p in simulator_prompts(simulator_url) if p.startswith("cancel ")}
    rows = [json.loads(line) for line in
            client.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
    ran = {f"cancel lighthouse {r['line'] - 1}" for r in rows if r["status"] != "canceled"}
    assert called == ran
    assert len(ran) == counts["succeeded"] + counts["failed"]


def test_batches_are_listed_newest_first_with_pagination(client: httpx.Client) -> None:
    ids = [client.post("/v1/batches", content=prompts_jsonl(1, f"list{k}")).json()["id"]
           for k in range(3)]
    first = client.get("/v1/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = client.get("/v1/batches", params={"limit": 2, "after": first["last_id"]}).json()
    assert second["data"][0]["id"] == ids[0]


def test_cli_submits_a_text_and_a_csv_file_waits_and_downloads_images(
        stack: RunningStack, api_key: str, tmp_path: Any) -> None:
    import re
    import subprocess
    import sys

    (tmp_path / "prompts.txt").write_text("a red fox\n\na blue whale\n")
    (tmp_path / "prompts.csv").write_text("custom_id,prompt,size\nowl,an owl,256x256\n")
    env = {**stack.env, "IMGQ_API_URL": stack.api_url, "IMGQ_API_KEY": api_key,
           "COLUMNS": "200"}

    def imgq(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    for name, expected in (("prompts.txt", {"line-1.png", "line-3.png"}),
                           ("prompts.csv", {"owl.png"})):
        out = imgq("submit", name, "--wait")
        batch_id = re.search(r"batch_[0-9a-f]+", out).group(0)  # type: ignore[union-attr]
        assert "completed" in out
        imgq("results", batch_id, "-o", str(tmp_path / f"out-{name}"))
        written = {p.name for p in (tmp_path / f"out-{name}").iterdir()}
        assert written == expected | {"results.jsonl"}
    assert "prompts" not in imgq("batches")  # the listing shows ids, not file names
    assert batch_id in imgq("batches")
