"""Images in S3: the real stack (API, a Celery worker, the scheduler, on PostgreSQL) with
IMGQ_BLOB_URL pointing at a real S3 API server (moto's, its own process). The worker's image
lands as an object in the bucket (alone: a manifest is written only while the database is
unreachable) and nothing in IMGQ_IMAGE_DIR; the API streams the bytes
from S3, or with IMGQ_BLOB_PRESIGNED_URLS answers 307 to a presigned URL that serves the same."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cli.lab.stack import RunningStack, start_stack, wait_jobs
from storage.blobs import image_key
from storage.db import drop_schema, migrate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
PREFIX = "imgq/images/"
MODEL = "gpt-image-1.5"


@pytest.fixture(scope="module", params=[False, True], ids=["streamed", "presigned"])
def s3_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             redis_url: str, simulator_url: str, postgres_url: str,
             s3_server: Any) -> Iterator[tuple[RunningStack, str]]:
    """The stack on PostgreSQL with its blobs in a bucket of its own; yields it and the bucket."""
    root = tmp_path_factory.mktemp("s3-stack")
    bucket = s3_server.create_bucket(f"imgq-e2e-{uuid.uuid4().hex[:12]}")
    drop_schema(postgres_url)
    migrate(postgres_url)
    redis.Redis.from_url(redis_url).flushdb()
    env = {**s3_server.env(bucket, PREFIX), "IMGQ_BLOB_PRESIGNED_URLS": str(request.param).lower(),
           "IMGQ_BLOB_PRESIGN_TTL_S": "120", "IMGQ_GATEWAY_POLL_S": "0.1"}
    running = start_stack(root, database_url=postgres_url, redis_url=redis_url,
                          simulator_url=simulator_url, image_dir=root / "images", extra_env=env)
    yield running, bucket
    running.stop_all()
    drop_schema(postgres_url)


@pytest.fixture(scope="module")
def api_key(s3_stack: tuple[RunningStack, str]) -> str:
    return s3_stack[0].new_tenant("s3-co")


def presigned(stack: RunningStack) -> bool:
    return stack.env["IMGQ_BLOB_PRESIGNED_URLS"] == "true"


def object_bytes(s3_server: Any, bucket: str, key: str) -> bytes:
    return bytes(s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read())


def test_the_image_is_an_object_in_the_bucket_and_the_api_serves_it(
        s3_stack: tuple[RunningStack, str], api_key: str, s3_server: Any) -> None:
    stack, bucket = s3_stack
    with stack.client(api_key) as client:
        created = client.post("/v1/jobs", json={"prompt": "a heron in S3", "model": MODEL})
        assert created.status_code == 202, created.text
        job = wait_jobs(client, [created.json()["id"]])[created.json()["id"]]
        assert job["status"] == "succeeded", (job, stack.logs())
        image = client.get(f"/v1/jobs/{job['id']}/images/0")
        other = stack.client(stack.new_tenant("s3-other"))
        assert other.get(f"/v1/jobs/{job['id']}/images/0").status_code == 404  # checked first
        other.close()

    key = image_key(job["id"], 0, "image/png")
    stored = set(s3_server.keys(bucket))
    assert PREFIX + key in stored
    assert f"{PREFIX}{job['id'][-2:]}/{job['id']}/result.json" not in stored
    expected = object_bytes(s3_server, bucket, PREFIX + key)
    assert expected.startswith(b"\x89PNG")
    image_dir = Path(stack.env["IMGQ_IMAGE_DIR"])
    assert not image_dir.exists() or not any(image_dir.rglob("*"))

    if not presigned(stack):
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content == expected
        return
    assert image.status_code == 307
    assert image.headers["cache-control"] == "no-store"
    location = image.headers["location"]
    assert location.startswith(f"{s3_server.endpoint_url}/{bucket}/{PREFIX}")
    assert "X-Amz-Expires=120" in location
    direct = httpx.get(location, timeout=10)  # no API key: the signature is the authority
    assert direct.status_code == 200
    assert direct.headers["content-type"] == "image/png"
    assert direct.content == expected


def test_the_gateway_answers_with_the_bytes_from_s3(
        s3_stack: tuple[RunningStack, str], api_key: str, s3_server: Any) -> None:
    """b64_json reads the object through the API whatever the setting; a `url` answer's link
    redirects to the presigned URL when presigned URLs are on."""
    stack, bucket = s3_stack
    with stack.client(api_key) as client:
        answer = client.post("/v1/images/generations", json={
            "prompt": "a gull over the bucket", "model": MODEL, "response_format": "b64_json"})
        assert answer.status_code == 200, answer.text
        job_id = answer.headers["x-imagequeue-job-id"]
        raw = base64.b64decode(answer.json()["data"][0]["b64_json"])
        assert raw == object_bytes(s3_server, bucket, PREFIX + image_key(job_id, 0, "image/png"))

        linked = client.post("/v1/images/generations", json={
            "prompt": "a tern over the bucket", "model": MODEL, "response_format": "url"})
        assert linked.status_code == 200, linked.text
        link: str = linked.json()["data"][0]["url"]
        job_id = linked.headers["x-imagequeue-job-id"]
    expected = object_bytes(s3_server, bucket, PREFIX + image_key(job_id, 0, "image/png"))
    opened = httpx.get(link, timeout=10)  # a signed link: no API key
    if presigned(stack):
        assert opened.status_code == 307
        opened = httpx.get(opened.headers["location"], timeout=10)
    assert opened.status_code == 200
    assert opened.content == expected
