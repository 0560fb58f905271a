"""Event streams wake on the published snapshot, and poll slowly without one.

A real API (uvicorn) on a redis-server of its own (a pub/sub channel is shared by every database
of a server, so another suite's scheduler must not publish to it) and a SQLite file; no scheduler
and no worker run, so a job stays queued until the test cancels it, and nothing is published
unless the test publishes it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from api.snapshots import SnapshotListener
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http
from imagequeue import keys
from tests.conftest import _missing

pytestmark = pytest.mark.timeout(120)
JOB = {"prompt": "a lighthouse at dawn", "size": "1024x1024"}


def needs_redis_server() -> None:
    if shutil.which("redis-server") is None:
        _missing("redis-server", "install it (apt-get install redis-server)")


class Api:
    """One API process with its own Redis and database, and a tenant's client."""

    def __init__(self, root: Path, fallback_poll_s: float | None) -> None:
        from storage.db import make_engine, make_sessionmaker, migrate
        from storage.tenants import create_tenant

        self.redis_server = RedisServer(root / "redis.log").start()
        self.redis_url = self.redis_server.url
        self.redis = redis.Redis.from_url(self.redis_url)
        database_url = f"sqlite:///{root / 'imgq.db'}"
        migrate(database_url)
        engine = make_engine(database_url)
        with make_sessionmaker(engine).begin() as session:
            _, self.api_key = create_tenant(session, "streams")
        engine.dispose()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {"IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": self.redis_url,
               "IMGQ_IMAGE_DIR": str(root / "images"), "IMGQ_PUBLIC_BASE_URL": self.url}
        if fallback_poll_s is not None:
            env["IMGQ_STREAM_FALLBACK_POLL_S"] = str(fallback_poll_s)
        self.log = root / "api.log"
        self.proc = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                           "--port", str(port)], env=env, log=self.log)
        wait_http(f"{self.url}/healthz", proc=self.proc)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.api_key}"})

    def wait_subscribed(self, timeout_s: float = 10.0) -> None:
        """Until the API's listener holds its subscription (a publish before it would be lost)."""
        deadline = time.monotonic() + timeout_s
        while dict(self.redis.pubsub_numsub(keys.SNAPSHOT_CHANNEL)).get(
                keys.SNAPSHOT_CHANNEL.encode(), 0) < 1:
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def close(self) -> None:
        stop_process(self.proc)
        self.redis.close()
        self.redis_server.stop()


@pytest.fixture(scope="module")
def apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[float | None], Api]]:
    """An API per fallback period (None: the default), started when first asked for."""
    needs_redis_server()
    started: dict[float | None, Api] = {}

    def api(fallback_poll_s: float | None) -> Api:
        if fallback_poll_s not in started:
            started[fallback_poll_s] = Api(tmp_path_factory.mktemp("streams"), fallback_poll_s)
        return started[fallback_poll_s]

    yield api
    for running in started.values():
        running.close()


def read_events(response: httpx.Response, into: queue.Queue[dict[str, Any] | None]) -> None:
    """Each ``data:`` of the stream as it arrives, then None when the server ends the stream."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            into.put({"received_at": time.monotonic(), **json.loads(line[5:])})
    into.put(None)


def follow(client: httpx.Client, path: str) -> tuple[queue.Queue[dict[str, Any] | None],
                                                     threading.Thread]:
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def run() -> None:
        with client.stream("GET", path) as response:
            assert response.status_code == 200
            read_events(response, events)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    return events, reader


def test_a_published_snapshot_wakes_a_stream_at_once(apis: Callable[[float | None], Api]) -> None:
    api = apis(60.0)  # without a snapshot, the stream would not read its job again for a minute
    api.wait_subscribed()
    with api.client() as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        events, reader = follow(client, f"/v1/jobs/{job_id}/events")
        first = events.get(timeout=10)
        assert first is not None and first["status"] == "queued"
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200

        with pytest.raises(queue.Empty):  # nothing wakes the stream yet
            events.get(timeout=1.0)
        published_at = time.monotonic()
        assert api.redis.publish(keys.SNAPSHOT_CHANNEL, str(time.time())) == 1
        canceled = events.get(timeout=5)
        assert canceled is not None and canceled["status"] == "canceled"
        assert canceled["received_at"] - published_at < 1.0
        assert events.get(timeout=5) is None  # a job that ended ends its stream
        reader.join(timeout=5)


def test_a_batch_stream_wakes_on_a_published_snapshot(apis: Callable[[float | None], Api]) -> None:
    api = apis(60.0)
    api.wait_subscribed()
    with api.client() as client:
        batch = client.post("/v1/batches", content=b'{"custom_id": "a", "prompt": "a boat"}\n',
                            headers={"Content-Type": "application/jsonl"}).json()
        events, reader = follow(client, f"/v1/batches/{batch['id']}/events")
        first = events.get(timeout=10)
        assert first is not None and first["status"] == "in_progress"
        assert client.delete(f"/v1/batches/{batch['id']}").status_code == 200

        with pytest.raises(queue.Empty):
            events.get(timeout=1.0)
        published_at = time.monotonic()
        api.redis.publish(keys.SNAPSHOT_CHANNEL, str(time.time()))
        canceled = events.get(timeout=5)
        assert canceled is not None and canceled["status"] == "canceled"
        assert canceled["received_at"] - published_at < 1.0
        assert events.get(timeout=5) is None
        reader.join(timeout=5)


def test_a_stream_follows_its_job_with_no_publisher(apis: Callable[[float | None], Api]) -> None:
    api = apis(None)  # the default fallback period
    with api.client() as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        events, reader = follow(client, f"/v1/jobs/{job_id}/events")
        first = events.get(timeout=10)
        assert first is not None and first["status"] == "queued"
        canceled_at = time.monotonic()
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        canceled = events.get(timeout=10)
        assert canceled is not None and canceled["status"] == "canceled"
        assert canceled["received_at"] - canceled_at < 2.0 + 1.0  # the default period, and slack
        assert events.get(timeout=5) is None
        reader.join(timeout=5)
    assert "Traceback" not in api.log.read_text()


def test_the_listener_rides_out_an_unreachable_redis_and_subscribes_once_it_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    needs_redis_server()
    port = free_port()  # nothing listens there yet
    listener = SnapshotListener(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    server = RedisServer(tmp_path / "redis.log", port=port)

    async def scenario() -> None:
        listener.start()
        # Redis unreachable: a stream's wait ends at its fallback period, with no error.
        started = time.monotonic()
        assert await listener.wait(listener.next_snapshot(), 0.3) is False
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.5)  # it retries meanwhile; a subscription that must not come
        assert not listener.subscribed

        await asyncio.to_thread(server.start)
        client = aioredis.Redis.from_url(server.url)
        try:
            deadline = time.monotonic() + 10
            while dict(await client.pubsub_numsub(keys.SNAPSHOT_CHANNEL)).get(
                    keys.SNAPSHOT_CHANNEL.encode(), 0) < 1:
                assert time.monotonic() < deadline, "the listener did not subscribe again"
                await asyncio.sleep(0.05)
            wake = listener.next_snapshot()
            assert await client.publish(keys.SNAPSHOT_CHANNEL, "1.0") == 1
            assert await listener.wait(wake, 5.0) is True
            assert listener.heard == 1
        finally:
            await client.aclose()
            await listener.stop()

    try:
        with caplog.at_level(logging.WARNING, logger="api.snapshots"):
            asyncio.run(scenario())
    finally:
        server.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "api.snapshots"]
    assert len([m for m in messages if "redis unreachable" in m]) == 1, messages  # logged once
    assert any("redis reachable again" in m for m in messages), messages
    assert all(r.exc_info is None for r in caplog.records if r.name == "api.snapshots")
