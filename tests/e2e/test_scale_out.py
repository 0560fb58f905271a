"""Several hosts, one deployment: three worker processes, each in a UTS namespace of its own with
its own host name, share one queue, one breaker, PostgreSQL, a real S3 API server (moto's, its
own process) and RabbitMQ. A batch completes with work on all three; every image is read back
through an API process that wrote none of them (and a second one with an empty image directory),
byte for byte what the bucket holds; no job ran twice."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from typer.testing import CliRunner

from cli.lab.stack import can_fake_hostnames, sim_calls, sim_profile, start_stack
from cli.main import app
from cli.stack import free_port, spawn, stop_process, wait_http, wait_until
from storage.db import drop_schema, migrate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
HOSTS = ("host-a", "host-b", "host-c")
MODEL = "gemini-3-pro-image-preview"  # the head of the default route
PREFIX = "images/"


def test_three_hosts_share_one_queue_and_every_image_is_readable_from_another_process(
        tmp_path: Path, redis_url: str, postgres_url: str, simulator: str, rabbitmq_url: str,
        s3_server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    why_not = can_fake_hostnames()
    if why_not is not None:
        message = f"three host names need a UTS namespace each: {why_not} (run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    drop_schema(postgres_url)
    migrate(postgres_url)
    redis.Redis.from_url(redis_url).flushdb()
    sim_profile(simulator, outage_on=None)
    env = {**s3_server.env(s3_bucket, PREFIX), "IMGQ_BROKER_URL": rabbitmq_url}
    stack = start_stack(tmp_path, database_url=postgres_url, redis_url=redis_url,
                        simulator_url=simulator, image_dir=tmp_path / "api-images",
                        extra_env=env, workers=0)
    other_api = None
    stack_clients: list[httpx.Client] = []
    try:
        for k, host in enumerate(HOSTS):
            stack.start_worker(f"worker{k + 1}", concurrency=2,
                               env={**stack.env, "IMGQ_IMAGE_DIR": str(tmp_path / host)},
                               hostname=host)
        stack.wait_workers(len(HOSTS))

        monkeypatch.setenv("IMGQ_REDIS_URL", redis_url)
        listed = json.loads(CliRunner().invoke(app, ["workers", "--json"]).stdout)["workers"]
        assert sorted(w["host"] for w in listed) == list(HOSTS)
        status = httpx.get(f"{stack.api_url}/v1/status", timeout=30).json()["workers"]
        assert sorted(n["host"] for n in status["nodes"]) == list(HOSTS)
        assert status["slots"] == 2 * len(HOSTS)

        jobs = 36
        client = stack.client(stack.new_tenant("scale-out"))
        stack_clients.append(client)
        body = "".join(json.dumps({"custom_id": f"c{k}", "prompt": f"three hosts {k}"}) + "\n"
                       for k in range(jobs))
        batch = client.post("/v1/batches", content=body,
                            headers={"Content-Type": "application/jsonl"})
        assert batch.status_code == 202, batch.text
        batch_id = batch.json()["id"]

        def ended() -> dict[str, Any] | None:
            shown: dict[str, Any] = client.get(f"/v1/batches/{batch_id}").json()
            return shown if shown["status"] != "in_progress" else None

        done = wait_until(ended, "the batch ends", timeout_s=120, poll_s=0.2)
        assert done["request_counts"]["succeeded"] == jobs, done

        results = [json.loads(line) for line in
                   client.get(f"/v1/batches/{batch_id}/results").text.splitlines()]
        job_ids = [row["job_id"] for row in results]
        assert len(set(job_ids)) == jobs
        documents = [client.get(f"/v1/jobs/{job_id}").json() for job_id in job_ids]
        calls = [a for d in documents for a in d["attempts"]]
        assert all(a["outcome"] == "success" for a in calls) and len(calls) == jobs  # once each
        by_host = Counter(a["worker"].partition(":")[0] for a in calls)
        assert set(by_host) == set(HOSTS), by_host  # every host did some of the work
        assert len(sim_calls(simulator, MODEL)) == jobs  # and no call was made twice

        # Nothing on any worker's disk or the API's: the images are objects in the bucket.
        assert not any((tmp_path / name).exists() and any((tmp_path / name).rglob("*.png"))
                       for name in (*HOSTS, "api-images"))
        objects = {key: hashlib.sha256(s3_server.client().get_object(
            Bucket=s3_bucket, Key=key)["Body"].read()).hexdigest()
            for key in s3_server.keys(s3_bucket, PREFIX) if key.endswith(".png")}
        assert len(objects) == jobs

        # A second API process, another image directory, reads every one of them too.
        port = free_port()
        other_api = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                           "--port", str(port), "--log-level", "warning"],
                          env={**stack.env, "IMGQ_IMAGE_DIR": str(tmp_path / "other-api")},
                          log=tmp_path / "other-api.log")
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=other_api)
        key = client.headers["Authorization"]
        for base in (stack.api_url, f"http://127.0.0.1:{port}"):
            with httpx.Client(base_url=base, headers={"Authorization": key}, timeout=30) as api:
                served = sorted(hashlib.sha256(api.get(f"/v1/jobs/{d['id']}/images/0").content)
                                .hexdigest() for d in documents)
            assert served == sorted(objects.values()), base
    finally:
        for opened in stack_clients:
            opened.close()
        if other_api is not None:
            stop_process(other_api)
        stack.stop_all()
        drop_schema(postgres_url)
