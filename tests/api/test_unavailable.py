"""What the API tells clients while PostgreSQL or Redis is unreachable, against real processes.

A real API (uvicorn), a private redis-server and a throwaway PostgreSQL cluster of our own: each
dependency is stopped, every endpoint must answer 503 with ``Retry-After`` in the one error shape
(never a plain-text 500 or a reset connection), ``/readyz`` says which one is down while
``/healthz`` stays 200, and once it is back everything works again. A submit while Redis is down
is accepted (202): the job is committed, and reconcile indexes it once Redis is back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
import sqlalchemy
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from cli.lab.postgres import ThrowawayPostgres
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http

pytestmark = pytest.mark.timeout(120)
DATABASE = "imgq_unavailable"
RETRY_AFTER = "3"


@dataclass
class Outage:
    api_url: str
    env: dict[str, str]
    log: Path
    postgres: ThrowawayPostgres
    database_url: str
    redis: RedisServer
    api: subprocess.Popen[bytes]
    api_key: str = ""
    batch_id: str = ""

    def client(self, timeout_s: float = 15.0) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=timeout_s,
                            headers={"Authorization": f"Bearer {self.api_key}"})

    def stop_redis(self) -> None:
        self.redis.stop()

    def start_redis(self) -> None:
        """A new redis-server on the same port (empty: it kept nothing on disk)."""
        self.redis.start()

    def wait_ready(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """Poll /readyz until 200 (never a fixed sleep)."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while True:
                answer = client.get("/readyz")
                if answer.status_code == 200:
                    return answer.json()  # type: ignore[no-any-return]
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.1)


def _create_database(postgres: ThrowawayPostgres) -> str:
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    return postgres.url.rsplit("/", 1)[0] + f"/{DATABASE}"


@pytest.fixture(scope="module")
def outage(throwaway_postgres: ThrowawayPostgres,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    from storage.db import migrate

    if shutil.which("redis-server") is None:
        from tests.conftest import _missing

        _missing("redis-server", "install it (apt-get install redis-server)")
    root = tmp_path_factory.mktemp("unavailable")
    database_url = _create_database(throwaway_postgres)
    migrate(database_url)
    redis_server = RedisServer(root / "redis.log").start()
    redis_url = redis_server.url
    port = free_port()
    env = {"IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": redis_url,
           "IMGQ_IMAGE_DIR": str(root / "images"), "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "IMGQ_RETRY_AFTER_S": RETRY_AFTER, "IMGQ_REDIS_TIMEOUT_S": "1.0"}
    log = root / "api.log"
    api = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "info"], env=env, log=log)
    running = Outage(f"http://127.0.0.1:{port}", env, log, throwaway_postgres, database_url,
                     redis_server, api)
    try:
        wait_http(f"{running.api_url}/healthz", proc=api)
        out = subprocess.run([sys.executable, "-m", "cli", "tenant", "create", "outage"],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True)
        running.api_key = out.stdout.strip().splitlines()[-1]
        with running.client() as client:  # a batch with queued jobs (no workers run here)
            batch = client.post("/v1/batches", content=b'{"custom_id": "a", "prompt": "a cat"}\n',
                                headers={"Content-Type": "application/jsonl"})
            assert batch.status_code == 202, batch.text
            running.batch_id = batch.json()["id"]
        yield running
    finally:
        stop_process(api)
        running.redis.stop()
        if not throwaway_postgres.running():
            throwaway_postgres.start()  # the session's cluster, for whoever uses it next


@pytest.fixture()
def up(outage: Outage) -> Outage:
    """The stack with both dependencies running (a failed test may have left one down)."""
    if not outage.postgres.running():
        outage.postgres.start()
    if not outage.redis.running():
        outage.start_redis()
    outage.wait_ready()
    return outage


def assert_unavailable(answer: httpx.Response, dependency: str) -> None:
    """503, Retry-After, the one error shape, and a message naming the dependency."""
    assert answer.status_code == 503, (answer.request.url, answer.status_code, answer.text)
    assert answer.headers["Retry-After"] == RETRY_AFTER
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == "unavailable"
    assert body["error"]["details"] == []
    assert dependency in body["error"]["message"], body
    assert f"retry in {RETRY_AFTER} s" in body["error"]["message"]


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a text/event-stream."""
    event, data = "message", ""
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data = line.split(":", 1)[1].strip()
        elif line == "" and data:
            yield event, data
            event, data = "message", ""


def assert_clean_log(outage: Outage) -> None:
    text = outage.log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    assert "Exception in ASGI application" not in text, text[-4000:]
    assert not re.search(r'HTTP/1\.[01]" 500', text), text[-4000:]
    assert re.search(r'HTTP/1\.[01]" 503', text), "access log missing: " + text[-2000:]


JOB = {"prompt": "a lighthouse at dawn", "size": "1024x1024"}
BATCH = b'{"custom_id": "x", "prompt": "a boat"}\n'


def test_postgres_down(up: Outage) -> None:
    outage = up
    with outage.client() as client:
        job = client.post("/v1/jobs", json=JOB)
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]

        with client.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            assert stream.status_code == 200
            events = sse_events(stream.iter_lines())
            first = next(events)
            assert first[0] == "job" and json.loads(first[1])["status"] == "queued"
            outage.postgres.stop()
            # The stream polls the database: cut short, it ends with an error event, cleanly.
            rest = list(events)
        assert [e for e, _ in rest][-1:] == ["error"], rest
        error = json.loads(rest[-1][1])
        assert error["error"]["type"] == "unavailable"
        assert "database" in error["error"]["message"]

        for answer in (
            client.post("/v1/jobs", json=JOB),
            client.get(f"/v1/jobs/{job_id}"),
            client.get("/v1/batches"),
            client.get(f"/v1/batches/{outage.batch_id}"),
            client.get(f"/v1/batches/{outage.batch_id}/results"),
            client.get("/v1/status"),
            client.post("/v1/batches", content=BATCH, headers={"Content-Type": "application/jsonl"}),
            client.get(f"/v1/jobs/{job_id}/events"),
            client.get(f"/v1/batches/{outage.batch_id}/events"),
            client.delete(f"/v1/jobs/{job_id}"),
        ):
            assert_unavailable(answer, "database")
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["Retry-After"] == RETRY_AFTER
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["database"].startswith("unreachable: ")
        assert ready.json()["checks"]["redis"] == "ok"

        outage.postgres.start()
        assert outage.wait_ready() == {"status": "ready",
                                       "checks": {"database": "ok", "redis": "ok"}}
        back = client.get(f"/v1/jobs/{job_id}")
        assert back.status_code == 200, back.text
        assert back.json()["queue_position"] is not None
        again = client.post("/v1/jobs", json=JOB)
        assert again.status_code == 202, again.text
        assert client.get("/v1/batches").status_code == 200
        assert client.get("/v1/status").status_code == 200
    assert_clean_log(outage)


def test_redis_down(up: Outage) -> None:
    from scheduler.queue.index import WaitingIndex
    from scheduler.queue.jobs import reconcile
    from storage.db import make_engine, make_sessionmaker

    outage = up
    with outage.client() as client:
        before = client.post("/v1/jobs", json=JOB)
        assert before.status_code == 202, before.text
        outage.stop_redis()

        # Committed means accepted: the job exists and will run, its position unknown for now.
        job = client.post("/v1/jobs", json=JOB)
        assert job.status_code == 202, job.text
        assert job.json()["status"] == "queued"
        assert job.json()["queue_position"] is None
        batch = client.post("/v1/batches", content=BATCH,
                            headers={"Content-Type": "application/jsonl"})
        assert batch.status_code == 202, batch.text
        assert batch.json()["request_counts"]["queued"] == 1
        engine = sqlalchemy.create_engine(outage.database_url)
        try:
            with engine.connect() as conn:
                status = conn.execute(sqlalchemy.text("SELECT status FROM jobs WHERE id = :id"),
                                      {"id": job.json()["id"]}).scalar_one()
        finally:
            engine.dispose()
        assert status == "queued"

        for answer in (
            client.get(f"/v1/jobs/{before.json()['id']}"),
            client.get(f"/v1/jobs/{job.json()['id']}"),
            client.get("/v1/status"),
            client.get("/v1/batches"),
            client.get(f"/v1/batches/{outage.batch_id}"),
            client.get(f"/v1/jobs/{job.json()['id']}/events"),
        ):
            assert_unavailable(answer, "Redis")
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.headers["Retry-After"] == RETRY_AFTER
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["redis"].startswith("unreachable: ")

        outage.start_redis()
        assert outage.wait_ready()["status"] == "ready"
        assert client.get("/v1/status").status_code == 200

        # The new Redis is empty; reconcile (the scheduler's job) rebuilds the index from the
        # database, the submit made while Redis was down included.
        engine = make_engine(outage.database_url)
        redis_client = redis.Redis.from_url(outage.env["IMGQ_REDIS_URL"])
        try:
            assert reconcile(make_sessionmaker(engine), WaitingIndex(redis_client)) >= 3
        finally:
            redis_client.close()
            engine.dispose()
        assert client.get(f"/v1/jobs/{job.json()['id']}").json()["queue_position"] is not None
    assert_clean_log(outage)


def test_unexpected_error_is_json_500() -> None:
    """Not an outage: a bug. Still JSON in the one shape, status 500, type internal_error."""
    import asyncio

    from api.app import create_app
    from imagequeue.settings import Settings

    app: FastAPI = create_app(Settings(retry_after_s=7))

    @app.get("/boom")
    def boom() -> None:
        raise ValueError("a bug")

    @app.get("/db-gone")
    def db_gone() -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    async def call() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom"), await client.get("/db-gone")

    boom_answer, gone = asyncio.run(call())
    assert boom_answer.status_code == 500
    assert boom_answer.json()["error"]["type"] == "internal_error"
    assert boom_answer.json()["error"]["details"] == []
    assert "a bug" not in boom_answer.text  # internals stay in the log
    assert gone.status_code == 503
    assert gone.headers["Retry-After"] == "7"
    assert gone.json()["error"]["message"] == "the database is unreachable; retry in 7 s"
