"""Hostile input against the real API (uvicorn, a worker, the scheduler), on SQLite and on
PostgreSQL: what a user sees for each class of input an outside tester sent, and that none of it
is a 500 or a stored row.

* strings PostgreSQL or UTF-8 cannot hold (NUL, lone surrogates) in every field, at any depth;
* nesting (a JSONL line 5,000 deep, metadata 600 deep), metadata too large, duplicate keys;
* loose types (``n: "2"``, ``n: true``, ``priority: "1"``, ``size: "1024x1024\\n"``), an empty
  ``Idempotency-Key``;
* ids that could never exist in a path or a query;
* a batch line's metadata and line number, read back through the job, ``results.jsonl`` and the
  webhooks;
* uploads over ``max_batch_bytes``, refused while the client is still sending;
* an unexpected exception: a 500 in the one error shape with the request id it was logged with.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.lab.stack import RunningStack
from tests.e2e.conftest import stack_on_each_database

MAX_BATCH_BYTES = 100_000
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    """The whole stack with a small upload limit, webhooks to loopback, and a temp dir of its
    own (TMPDIR) so that what an upload writes there can be seen."""
    tmp = tmp_path_factory.mktemp("hostile-tmp")
    yield from stack_on_each_database(
        request, tmp_path_factory, redis_url, simulator_url, "hostile",
        extra_env={"IMGQ_MAX_BATCH_BYTES": str(MAX_BATCH_BYTES), "TMPDIR": str(tmp),
                   "IMGQ_WEBHOOK_ALLOW_LOOPBACK": "true", "IMGQ_WEBHOOK_POLL_INTERVAL_S": "0.1"})


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("hostile-co")


@pytest.fixture()
def client(stack: RunningStack, api_key: str) -> Iterator[httpx.Client]:
    with stack.client(api_key) as http:
        yield http


def job_count(stack: RunningStack) -> int:
    engine = sqlalchemy.create_engine(stack.env["IMGQ_DATABASE_URL"])
    with engine.connect() as conn:
        count = conn.execute(sqlalchemy.text("SELECT count(*) FROM jobs")).scalar_one()
    engine.dispose()
    return int(count)


def post_json(client: httpx.Client, path: str, text: str | bytes,
              headers: dict[str, str] | None = None) -> httpx.Response:
    """A body sent byte for byte as given (httpx's json= would escape or refuse what we send)."""
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return client.post(path, content=body,
                       headers={"Content-Type": "application/json", **(headers or {})})


def the_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The one error shape, never a 500, with an X-Request-Id."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-request-id")
    body = response.json()
    assert set(body) == {"error"} and {"type", "message", "details"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


def fields(error: dict[str, Any]) -> list[str | None]:
    return [d["field"] for d in error["details"]]


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


# --- POST /v1/jobs ----------------------------------------------------------------------------

BAD_JOBS = {  # name: (body as JSON text, status, field named, words of the message)
    "NUL in prompt": ('{"prompt": "a\\u0000b"}', 422, "prompt", "NUL"),
    "lone surrogate in prompt": ('{"prompt": "a\\ud800b"}', 422, "prompt", "lone surrogate"),
    "lone low surrogate in prompt": ('{"prompt": "\\udfff"}', 422, "prompt", "lone surrogate"),
    "NUL in a metadata value": ('{"prompt": "x", "metadata": {"tags": ["ok", "a\\u0000"]}}',
                                422, "metadata.tags.1", "NUL"),
    "surrogate in a metadata key": ('{"prompt": "x", "metadata": {"a": {"k\\ud83d": 1}}}',
                                    422, "metadata.a.k\\ud83d", "lone surrogate"),
    "NUL in webhook_url": ('{"prompt": "x", "webhook_url": "http://127.0.0.1/\\u0000"}', 422,
                           "webhook_url", "NUL"),
    "surrogate in webhook_url": ('{"prompt": "x", "webhook_url": "http://a.example/\\ud800"}',
                                 422, "webhook_url", "lone surrogate"),
    "NUL in model": ('{"prompt": "x", "model": "gpt\\u0000"}', 422, "model", "NUL"),
    "metadata 600 deep": ('{"prompt": "x", "metadata": ' + nested(600) + "}", 422,
                          "metadata.a.a.a.a.a.a.a.a", "deeper than 8 levels"),
    "metadata 9 deep": ('{"prompt": "x", "metadata": ' + nested(9) + "}", 422,
                        "metadata.a.a.a.a.a.a.a.a", "deeper than 8 levels"),
    "body 5000 deep": ("[" * 5000 + "]" * 5000, 422, None, "nests too deeply"),
    "metadata over 16 KiB": ('{"prompt": "x", "metadata": {"v": "' + "x" * 17_000 + '"}}', 422,
                             "metadata", "the limit is 16384"),
    "NaN in metadata": ('{"prompt": "x", "metadata": {"v": NaN}}', 422, None, "NaN"),
    "1e400 in metadata": ('{"prompt": "x", "metadata": {"v": 1e400}}', 422, "metadata.v",
                          "finite"),
    "n as a string": ('{"prompt": "x", "n": "2"}', 422, "n", "must be an integer"),
    "n as a boolean": ('{"prompt": "x", "n": true}', 422, "n", "must be an integer"),
    "n as a float": ('{"prompt": "x", "n": 2.0}', 422, "n", "must be an integer"),
    "priority as a string": ('{"prompt": "x", "priority": "1"}', 422, "priority",
                             "must be an integer"),
    "size with a trailing newline": ('{"prompt": "x", "size": "1024x1024\\n"}', 422, "size",
                                     "1024x1024"),
    "size in Arabic-Indic digits": ('{"prompt": "x", "size": "\u0661\u0660\u0662\u0664x1024"}',
                                    422, "size", "1024x1024"),
    "prompt twice": ('{"prompt": "x", "prompt": "y"}', 422, "prompt", "more than once"),
    "a metadata key twice": ('{"prompt": "x", "metadata": {"t": [{"k": 1, "k": 2}]}}', 422,
                             "metadata.t.0.k", "more than once"),
    "a number of 5000 digits": ('{"prompt": "x", "metadata": {"v": ' + "7" * 5000 + "}}", 422,
                                None, "cannot be read"),
    "an unknown field": ('{"prompt": "x", "flat": 1}', 422, "flat", "unknown field"),
    "not JSON": ('{"prompt": "x",', 400, None, "not valid JSON"),
    "not an object": ('["x"]', 422, None, "JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_JOBS))
def test_a_hostile_job_is_refused_naming_the_field_and_nothing_is_stored(
        client: httpx.Client, stack: RunningStack, case: str) -> None:
    text, status, field, words = BAD_JOBS[case]
    before = job_count(stack)
    error = the_error(post_json(client, "/v1/jobs", text), status)
    assert words in error["message"], error
    if field is not None:
        assert fields(error) == [field], error
        assert error["message"].startswith(f"{field}: ")
    assert job_count(stack) == before


def test_raw_surrogate_bytes_are_not_json(client: httpx.Client) -> None:
    error = the_error(post_json(client, "/v1/jobs", b'{"prompt": "\xed\xa0\x80"}'), 400)
    assert error["type"] == "invalid_json" and "UTF-8" in error["message"]


def test_a_20_mb_metadata_value_is_refused_before_it_is_read(client: httpx.Client) -> None:
    text = '{"prompt": "x", "metadata": {"v": "' + "x" * 20_000_000 + '"}}'
    error = the_error(post_json(client, "/v1/jobs", text), 413)
    assert error["type"] == "request_too_large"


def test_metadata_at_the_limits_is_accepted_and_comes_back(client: httpx.Client) -> None:
    metadata = {"deep": json.loads(nested(7)), "v": "y" * 16_000}
    created = client.post("/v1/jobs", json={"prompt": "x", "metadata": metadata})
    assert created.status_code == 202, created.text
    assert client.get(f"/v1/jobs/{created.json()['id']}").json()["metadata"] == metadata


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
def test_an_empty_idempotency_key_is_refused_naming_the_header(
        client: httpx.Client, stack: RunningStack, path: str) -> None:
    before = job_count(stack)
    body = '{"prompt": "x"}' if path == "/v1/jobs" else '{"custom_id": "a", "prompt": "x"}\n'
    error = the_error(post_json(client, path, body, {"Idempotency-Key": ""}), 422)
    assert fields(error) == ["Idempotency-Key"]
    assert job_count(stack) == before


# --- ids in paths and queries ---------------------------------------------------------------

IMPOSSIBLE_IDS = {"NUL": "%00", "NUL inside": "job_%00abc", "over-long": "job_" + "a" * 37,
                  "far too long": "b" * 5000}
PATHS = ["/v1/jobs/{id}", "/v1/jobs/{id}/images/0", "/v1/jobs/{id}/events", "/v1/batches/{id}",
         "/v1/batches/{id}/results", "/v1/batches/{id}/results.zip", "/v1/batches/{id}/events"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ident", list(IMPOSSIBLE_IDS))
def test_an_id_that_could_never_exist_is_a_404_like_an_unknown_one(
        client: httpx.Client, path: str, ident: str) -> None:
    unknown = the_error(client.get(path.format(id="job_0123456789abcdef0123456789abcdef")), 404)
    error = the_error(client.get(path.format(id=IMPOSSIBLE_IDS[ident])), 404)
    assert (error["type"], error["details"]) == (unknown["type"], unknown["details"]) == (
        "not_found", [])
    assert error["message"].endswith("not found")


@pytest.mark.parametrize("path", ["/v1/jobs/%00", "/v1/batches/%00"])
def test_deleting_an_impossible_id_is_a_404(client: httpx.Client, path: str) -> None:
    assert the_error(client.delete(path), 404)["type"] == "not_found"


@pytest.mark.parametrize(("path", "param"), [("/v1/batches", "after"),
                                             ("/v1/webhooks/deliveries", "subject_id")])
@pytest.mark.parametrize("value", ["\x00", "a\x00b", "x" * 41])
def test_a_query_filter_that_could_never_be_an_id_is_a_422_naming_it(
        client: httpx.Client, path: str, param: str, value: str) -> None:
    error = the_error(client.get(path, params={param: value}), 422)
    assert fields(error) == [param]


def test_another_tenants_job_is_a_404_in_the_shape_of_an_unknown_one(
        client: httpx.Client, stack: RunningStack) -> None:
    job = client.post("/v1/jobs", json={"prompt": "mine"}).json()
    with stack.client(stack.new_tenant(f"other-{time.monotonic_ns()}")) as theirs:
        for path in (f"/v1/jobs/{job['id']}", "/v1/jobs/job_0123456789abcdef0123456789abcdef"):
            error = the_error(theirs.get(path), 404)
            assert (error["type"], error["details"]) == ("not_found", [])
            assert error["message"] == f"job {path.rsplit('/', 1)[1]} not found"


# --- batch lines ----------------------------------------------------------------------------

HOSTILE_LINES: list[tuple[str, str | None, str]] = [  # (line, field named, words)
    ('{"custom_id": "nul", "prompt": "a\\u0000"}', "prompt", "NUL"),
    ('{"custom_id": "sur", "prompt": "a\\ud800"}', "prompt", "lone surrogate"),
    ('{"custom_id": "c\\u0000", "prompt": "x"}', "custom_id", "NUL"),
    ('{"custom_id": "m", "prompt": "x", "metadata": {"k": "\\udc00"}}', "metadata.k",
     "lone surrogate"),
    ("[" * 5000 + "]" * 5000, None, "nests too deeply"),
    ('{"custom_id": "deep", "prompt": "x", "metadata": ' + nested(600) + "}",
     "metadata.a.a.a.a.a.a.a.a", "deeper than 8 levels"),
    ('{"custom_id": "deep5000", "prompt": "x", "metadata": ' + nested(5000) + "}", None,
     "nests too deeply"),
    ('{"custom_id": "n1", "prompt": "x", "n": "2"}', "n", "must be an integer"),
    ('{"custom_id": "n2", "prompt": "x", "n": true}', "n", "must be an integer"),
    ('{"custom_id": "s", "prompt": "x", "size": "1024x1024\\n"}', "size", "1024x1024"),
    ('{"custom_id": "dup", "prompt": "x", "prompt": "y"}', "prompt", "more than once"),
    ('{"custom_id": "nan", "prompt": "x", "metadata": {"v": NaN}}', None, "NaN"),
    ('{"custom_id": "big", "prompt": "x", "metadata": {"v": ' + "9" * 5000 + "}}", None,
     "cannot be read"),
    ('{"custom_id": "o1", "method": "POST", "url": "/v1/images/generations", '
     '"body": {"prompt": "x", "n": "2"}}', "body.n", "must be an integer"),
    ('{"custom_id": "o2", "body": {"prompt": "x\\u0000"}}', "body.prompt", "NUL"),
]


def test_every_hostile_batch_line_is_that_lines_422_and_results_use_the_input_line_numbers(
        client: httpx.Client, stack: RunningStack) -> None:
    good = ['{"custom_id": "g1", "prompt": "ok", "metadata": {"row": 1}}',
            '{"custom_id": "g2", "method": "POST", "url": "/v1/images/generations", '
            '"body": {"prompt": "ok", "metadata": {"row": 2}}}',
            '{"custom_id": "g3", "prompt": "ok"}']
    lines = [good[0], "", *(line for line, _, _ in HOSTILE_LINES[:5]), "   ", good[1],
             *(line for line, _, _ in HOSTILE_LINES[5:]), good[2]]
    body = "\n".join(lines).encode("utf-8", "surrogatepass") + b"\n"
    expected = {n: (f, w) for n, (f, w) in zip(
        [k + 1 for k, text in enumerate(lines) if text.strip() and text not in good],
        [(f, w) for _, f, w in HOSTILE_LINES], strict=True)}

    before = job_count(stack)
    refused = the_error(client.post("/v1/batches", content=body), 422)  # all or nothing
    assert refused["type"] == "invalid_batch"
    assert job_count(stack) == before
    assert [d["field"] for d in refused["details"]] == [
        f"line {n}" + (f": {f}" if f else "") for n, (f, _) in expected.items()]

    created = client.post("/v1/batches", params={"allow_partial": "true"}, content=body)
    assert created.status_code == 202, created.text
    batch = created.json()
    rejected = {r["line"]: r for r in batch["rejected"]}
    assert sorted(rejected) == sorted(expected)
    for number, (field, words) in expected.items():
        assert rejected[number]["field"] == field, rejected[number]
        assert words in rejected[number]["message"], rejected[number]
    assert batch["request_counts"]["total"] == 3
    rows = [json.loads(x) for x in client.get(f"/v1/batches/{batch['id']}/results").text
            .splitlines()]
    assert [(r["line"], r["custom_id"]) for r in rows] == [
        (lines.index(g) + 1, json.loads(g)["custom_id"]) for g in good]
    assert [r["metadata"] for r in rows] == [{"row": 1}, {"row": 2}, {}]


# --- round trips ----------------------------------------------------------------------------

UNICODE_PROMPTS = ["東京の夜景、浮世絵風に", "שלום עולם — مرحبا بالعالم",
                   "family 👨‍👩‍👧‍👦, flag 🏳️‍🌈, skin 👍🏽", "e\u0301 combining, \u200f RLM, \u202e RLO"]


class Receiver:
    """A webhook receiver on 127.0.0.1."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < count:
            assert time.monotonic() < deadline, f"only {len(self.bodies)} webhooks"
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_metadata_and_unicode_come_back_through_the_job_the_results_and_the_webhooks(
        client: httpx.Client) -> None:
    """A batch line's metadata is stored: its job and results.jsonl return it. A batch line has
    no webhook of its own (the batch's is per batch and carries the batch's metadata), so the
    webhook path is read through a job submitted with the same metadata and a webhook_url."""
    metadata = {"sku": "A-1", "名前": "東京", "rtl": "שלום", "emoji": "👩‍💻", "n": [1, 2.5, None],
                "nested": {"ok": True}}
    receiver = Receiver()
    try:
        lines = [{"custom_id": f"u{k}", "prompt": p, "size": "256x256", "metadata": metadata}
                 for k, p in enumerate(UNICODE_PROMPTS)]
        body = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        batch = client.post("/v1/batches", params={"webhook_url": receiver.url}, content=body)
        assert batch.status_code == 202, batch.text
        job = client.post("/v1/jobs", json={"prompt": UNICODE_PROMPTS[2], "size": "256x256",
                                            "metadata": metadata, "webhook_url": receiver.url})
        assert job.status_code == 202, job.text
        receiver.wait(2)
    finally:
        receiver.close()
    events = {e["type"]: e["data"] for e in receiver.bodies}
    assert events["job.succeeded"]["metadata"] == metadata
    assert events["job.succeeded"]["id"] == job.json()["id"]
    assert events["batch.completed"]["metadata"] == {}  # the batch's own (none was given)
    results = client.get(f"/v1/batches/{batch.json()['id']}/results")
    rows = [json.loads(x) for x in results.text.splitlines()]
    assert [r["line"] for r in rows] == [1, 2, 3, 4]
    assert all(r["metadata"] == metadata and r["status"] == "succeeded" for r in rows), rows
    for row, prompt in zip(rows, UNICODE_PROMPTS, strict=True):
        read = client.get(f"/v1/jobs/{row['job_id']}")
        assert read.json()["metadata"] == metadata
        assert read.json()["prompt"] == prompt
        assert json.dumps(prompt, ensure_ascii=False).encode() in read.content  # byte for byte
    assert client.get(f"/v1/jobs/{job.json()['id']}").json()["prompt"] == UNICODE_PROMPTS[2]


STORABLE = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                   min_size=1, max_size=60).filter(lambda s: s.strip())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prompt=STORABLE, poison=st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"]),
       at=st.integers(min_value=0, max_value=60))
def test_any_storable_prompt_comes_back_exactly_and_a_poisoned_one_is_refused(
        client: httpx.Client, prompt: str, poison: str, at: int) -> None:
    created = client.post("/v1/jobs", json={"prompt": prompt, "model": "gpt-image-1.5",
                                            "metadata": {prompt: [prompt]}})
    assert created.status_code == 202, created.text
    read = client.get(f"/v1/jobs/{created.json()['id']}").json()
    assert (read["prompt"], read["metadata"]) == (prompt, {prompt: [prompt]})
    bad = prompt[:at] + poison + prompt[at:]
    text = json.dumps({"prompt": bad})  # ASCII with \\u escapes: a lone surrogate survives
    error = the_error(post_json(client, "/v1/jobs", text), 422)
    assert fields(error) == ["prompt"]
    line = json.dumps({"custom_id": "h", "prompt": bad}) + "\n"
    error = the_error(client.post("/v1/batches", content=line.encode()), 422)
    assert fields(error) == ["line 1: prompt"]


# --- uploads over the limit -----------------------------------------------------------------

def raw_post(stack: RunningStack, api_key: str, headers: dict[str, str],
             parts: list[bytes]) -> tuple[int, dict[str, Any], float]:
    """Send the request line, headers and ``parts`` of the body, then stop sending (the rest of
    the body is never sent) and read the answer: (status, body, seconds it took)."""
    host, port = stack.api_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        head = (f"POST /v1/batches HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {api_key}"
                "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n")
        conn.sendall(head.encode())
        for part in parts:
            conn.sendall(part)
        started = time.monotonic()
        data = b""
        while b"\r\n\r\n" not in data:
            data += (received := conn.recv(65536))
            assert received, f"the connection closed without an answer: {data!r}"
        status_line, _, rest = data.partition(b"\r\n")
        header_block, _, content = rest.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in header_block.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(content) < length:
            content += (received := conn.recv(65536))
            assert received, "the connection closed in the middle of the answer"
    return int(status_line.split()[1]), json.loads(content[:length]), time.monotonic() - started


def chunked(data: bytes, size: int = 16_384) -> list[bytes]:
    return [f"{len(data[k:k + size]):x}\r\n".encode() + data[k:k + size] + b"\r\n"
            for k in range(0, len(data), size)]


JSONL = b'{"custom_id": "a", "prompt": "' + b"x" * 1000 + b'"}\n'
LIMIT_LINE = f"line {MAX_BATCH_BYTES // len(JSONL) + 1}"  # where the limit falls in JSONL * n
PART_HEAD = (b'--BOUND\r\nContent-Disposition: form-data; name="file"; filename="p.jsonl"\r\n'
             b"Content-Type: application/jsonl\r\n\r\n")
UPLOADS = {  # name: (headers, what is sent before we stop, the detail's field)
    "raw JSONL, 300 MB declared": ({"Content-Type": "application/jsonl",
                                    "Content-Length": "300000000"}, [JSONL * 64],
                                   "Content-Length"),
    "multipart, 300 MB declared": ({"Content-Type": "multipart/form-data; boundary=BOUND",
                                    "Content-Length": "300000000"}, [PART_HEAD, JSONL * 64],
                                   "Content-Length"),
    "raw JSONL, chunked": ({"Content-Type": "application/jsonl", "Transfer-Encoding": "chunked"},
                           chunked(JSONL * 120), LIMIT_LINE),
    "multipart, chunked": ({"Content-Type": "multipart/form-data; boundary=BOUND",
                            "Transfer-Encoding": "chunked"}, chunked(PART_HEAD + JSONL * 120),
                           LIMIT_LINE),
}


@pytest.mark.parametrize("case", list(UPLOADS))
def test_an_upload_over_the_limit_is_a_413_while_the_client_is_still_sending(
        stack: RunningStack, api_key: str, case: str) -> None:
    """The client sends a little over the limit (or only a start of a declared 300 MB) and then
    nothing more: the answer comes anyway, so the server did not wait for the whole body, and
    nothing of that size was written to the API's temp dir."""
    headers, parts, field = UPLOADS[case]
    before = job_count(stack)
    status, body, _ = raw_post(stack, api_key, headers, parts)
    assert status == 413, body
    assert body["error"]["type"] == "batch_too_large"
    assert [d["field"] for d in body["error"]["details"]] == [field]
    assert "larger than" in body["error"]["message"]
    assert f"{MAX_BATCH_BYTES} bytes" in body["error"]["message"]
    assert job_count(stack) == before
    tmp = Path(stack.env["TMPDIR"])
    assert [p for p in tmp.rglob("*") if p.is_file() and p.stat().st_size > MAX_BATCH_BYTES] == []


def test_a_multipart_upload_under_the_limit_is_still_a_batch(client: httpx.Client) -> None:
    lines = b"".join(JSONL.replace(b'"a"', f'"mp{k}"'.encode()) for k in range(3))
    created = client.post("/v1/batches", files={"file": ("p.jsonl", lines)},
                          data={"note": "ignored"})
    assert created.status_code == 202, created.text
    assert created.json()["request_counts"]["total"] == 3
    missing = client.post("/v1/batches", files={"other": ("p.jsonl", JSONL)})
    assert "`file` part" in the_error(missing, 422)["message"]


# --- request ids and the 500 ----------------------------------------------------------------

def test_every_response_has_a_request_id_and_a_sane_one_sent_is_kept(
        client: httpx.Client, stack: RunningStack) -> None:
    assert client.get("/healthz", headers={"X-Request-Id": "trace-42.a:b"}).headers[
        "x-request-id"] == "trace-42.a:b"
    for sent in (b"", b"has space", b"x" * 200, "é".encode(), b"a\tb"):
        got = client.get("/healthz", headers={"X-Request-Id": sent}).headers["x-request-id"]
        assert got.encode() != sent and len(got) == 32, got
    for response in (client.get("/v1/jobs/nope"), httpx.get(f"{stack.api_url}/v1/jobs/x"),
                     post_json(client, "/v1/jobs", "{")):
        assert response.headers["x-request-id"]


def test_an_unexpected_error_is_a_500_in_the_one_shape_with_the_logged_request_id(
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from api.app import create_app

    app = create_app()

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaboom \x00 secret detail")

    async def call(headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.get("/boom", headers=headers)

    with caplog.at_level(logging.ERROR, logger="api"):
        generated = asyncio.run(call({}))
        kept = asyncio.run(call({"X-Request-Id": "client-trace-7"}))
    for response in (generated, kept):
        error = the_error(response, 500)
        assert error["type"] == "internal_error"
        assert error["request_id"] == response.headers["x-request-id"]
        assert "kaboom" not in error["message"]  # the details go to the log, not the client
    assert kept.headers["x-request-id"] == "client-trace-7"
    logged = [r for r in caplog.records if r.exc_info and "kaboom" in str(r.exc_info[1])]
    assert [generated.headers["x-request-id"] in r.getMessage() for r in logged] == [True, False]
    assert "client-trace-7" in logged[1].getMessage()

