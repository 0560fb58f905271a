"""Job streams read their jobs together: the SQL statements of a wake do not grow with the number
of streams, and a stream still sees only its own tenant's job.

The real app served by uvicorn in this process (so its engine's statements can be counted with a
SQLAlchemy ``before_cursor_execute`` listener and its feed read), on PostgreSQL and a
redis-server of its own (a pub/sub channel is shared by every database of a server); no
scheduler runs, so nothing is published unless the test publishes it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import event

from api.job_feed import JobFeed
from imagequeue import keys
from tests.api.inprocess import serve_in_process, wait_for

pytestmark = pytest.mark.timeout(120)
JOB = {"prompt": "a lighthouse at dawn", "size": "1024x1024"}


@dataclass
class Served:
    url: str
    api_keys: list[str]
    redis: redis.Redis
    app: Any
    statements: list[int]

    def client(self, tenant: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.api_keys[tenant]}"})

    @property
    def feed(self) -> JobFeed:
        feed: JobFeed = self.app.state.job_feed
        return feed


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("job-feed")
    with serve_in_process(root, postgres_url, ["feed-a", "feed-b"], stream_fallback_poll_s=60.0,
                          tenant_rpm=0, tenant_max_queued=0) as api:
        statements = [0]

        def count(*_: Any) -> None:
            statements[0] += 1

        event.listen(api.app.state.services.engine, "before_cursor_execute", count)
        yield Served(api.url, api.api_keys, api.redis, api.app, statements)


def follow(client: httpx.Client, path: str) -> queue.Queue[dict[str, Any] | None]:
    """Each ``data:`` of the stream as it arrives, then None when the server ends it."""
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def run() -> None:
        with client.stream("GET", path) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.put(json.loads(line[5:]))
        events.put(None)

    threading.Thread(target=run, daemon=True).start()
    return events


def statements_per_wake(served: Served, streams: int, wakes: int = 3) -> float:
    """SQL statements the API sends per published snapshot while ``streams`` job streams, each
    on a job of its own, are open."""
    with served.client() as client:
        job_ids = [client.post("/v1/jobs", json=JOB).json()["id"] for _ in range(streams)]
        followed = [follow(client, f"/v1/jobs/{job_id}/events") for job_id in job_ids]
        for events in followed:
            first = events.get(timeout=15)
            assert first is not None and first["status"] == "queued"
        wait_for(lambda: served.feed.watched == streams, "every stream watches its job")
        before = served.statements[0]
        for _ in range(wakes):
            loads = served.feed.loads
            assert served.redis.publish(keys.SNAPSHOT_CHANNEL, str(time.time())) == 1
            wait_for(lambda: served.feed.loads > loads, "the woken streams load their jobs")  # noqa: B023
        sent = served.statements[0] - before
        for job_id in job_ids:
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        served.redis.publish(keys.SNAPSHOT_CHANNEL, str(time.time()))
        for events in followed:  # each stream sees its job canceled, then ends
            last = events.get(timeout=15)
            assert last is not None and last["status"] == "canceled"
            assert events.get(timeout=15) is None
        wait_for(lambda: served.feed.watched == 0, "every stream has let its job go")
    return sent / wakes


def test_the_statements_of_a_wake_do_not_grow_with_the_streams(served: Served) -> None:
    few = statements_per_wake(served, 2)
    many = statements_per_wake(served, 20)
    assert few > 0
    assert many == few, (few, many)


def test_a_stream_sees_only_its_own_tenants_job(served: Served) -> None:
    with served.client(0) as owner, served.client(1) as other:
        job_id = owner.post("/v1/jobs", json=JOB).json()["id"]
        events = follow(owner, f"/v1/jobs/{job_id}/events")
        first = events.get(timeout=15)
        assert first is not None and first["id"] == job_id
        wait_for(lambda: served.feed.watched == 1, "the owner's stream watches the job")
        # The job is in the process's feed now; another tenant still does not find it.
        answer = other.get(f"/v1/jobs/{job_id}/events")
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["type"] == "not_found"
        assert other.get("/v1/jobs/job_00000000000000000000000000000000/events").status_code == 404
        assert owner.delete(f"/v1/jobs/{job_id}").status_code == 200
        served.redis.publish(keys.SNAPSHOT_CHANNEL, str(time.time()))
        last = events.get(timeout=15)
        assert last is not None and last["status"] == "canceled"
        assert events.get(timeout=15) is None
