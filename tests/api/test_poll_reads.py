"""What one poll of ``GET /v1/jobs/{id}`` reads: one SQL statement (the job with its attempts; the
caller's tenant is held between changes), and the published snapshot once per publication, not
once per request. A tenant change announced as ``imgq tenant set`` announces it applies to the next
request; with the subscription down nothing is held.

The real app served by uvicorn in this process (its engine's statements counted with a SQLAlchemy
listener), on PostgreSQL and a redis-server of its own (its ``INFO commandstats`` counts the
reads); no scheduler runs, so the test publishes the snapshot itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import event

from imagequeue import keys
from scheduler.eta.curve import EtaCurve
from scheduler.eta.snapshot import SnapshotCache
from storage.db import make_engine, make_sessionmaker
from storage.models import Tenant
from tests.api.inprocess import serve_in_process, wait_for

pytestmark = pytest.mark.timeout(120)
JOB = {"prompt": "a lighthouse at dawn", "size": "1024x1024"}
SNAPSHOT = {"as_of_s": 0.0, "curve": EtaCurve(slots=0, mean_service_s=0.0, start_s=(),
                                                finish_s=()).to_dict(),
            "depth": {"interactive": 1, "bulk": 0}, "models": {}, "running": [],
            "dispatch_count": 0}


@dataclass
class Served:
    url: str
    api_key: str
    redis: redis.Redis
    app: Any
    statements: list[str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {self.api_key}"})

    def gets(self) -> int:
        """GET commands the Redis server has run so far."""
        stats = self.redis.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Served]:
    root: Path = tmp_path_factory.mktemp("poll-reads")
    with serve_in_process(root, postgres_url, ["poller"], tenant_rpm=0,
                          api_tenant_cache_s=60.0) as api:
        statements: list[str] = []
        event.listen(api.app.state.services.engine, "before_cursor_execute",
                     lambda _c, _cur, sql, *_: statements.append(sql))
        yield Served(api.url, api.api_keys[0], api.redis, api.app, statements)


def publish_snapshot(served: Served, depth: int) -> None:
    snapshot = {**SNAPSHOT, "as_of_s": time.time(), "depth": {"interactive": depth, "bulk": 0}}
    served.redis.set(keys.SNAPSHOT, json.dumps(snapshot))
    served.redis.publish(keys.SNAPSHOT_CHANNEL, str(snapshot["as_of_s"]))


def selects(statements: list[str]) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT")]


def test_a_poll_is_one_statement_and_reads_the_snapshot_once_per_publication(
        served: Served) -> None:
    with served.client() as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        publish_snapshot(served, 1)
        client.get(f"/v1/jobs/{job_id}").raise_for_status()  # the tenant and snapshot are held
        del served.statements[:]
        gets = served.gets()
        for _ in range(20):
            answer = client.get(f"/v1/jobs/{job_id}")
            assert answer.status_code == 200 and answer.json()["queue_position"] == 0
        polled = selects(served.statements)
        snapshot_gets = served.gets() - gets - 20  # one GET per poll is the dispatch count
    assert len(polled) == 20, polled  # the job with its attempts, in one statement each
    assert all("FROM jobs" in s and "attempts" in s for s in polled), polled[0]
    assert not any("FROM tenants" in s for s in served.statements)
    assert snapshot_gets == 0


def test_a_published_snapshot_is_read_again_once(served: Served) -> None:
    cache: SnapshotCache = served.app.state.services.snapshots
    with served.client() as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        client.get(f"/v1/jobs/{job_id}").raise_for_status()
        heard = cache.heard
        publish_snapshot(served, 7)
        wait_for(lambda: cache.heard > heard, "the listener hears the publication")
        gets = served.gets()
        for _ in range(10):
            client.get(f"/v1/jobs/{job_id}").raise_for_status()
        assert served.gets() - gets == 10 + 1  # the dispatch count each time, the snapshot once
    snap = cache.read()
    assert snap is not None and snap.depth == {"interactive": 7, "bulk": 0}


def test_a_tenant_change_applies_to_the_next_request(served: Served) -> None:
    with served.client() as client:
        assert client.get("/v1/limits").json()["max_queued"]["limit"] != 5
        engine = make_engine(served.app.state.services.settings.database_url)
        with make_sessionmaker(engine).begin() as session:
            tenant = session.query(Tenant).filter_by(name="poller").one()
            tenant.max_queued = 5
            tenant_id = tenant.id
        engine.dispose()
        assert client.get("/v1/limits").json()["max_queued"]["limit"] != 5  # still held
        cache = served.app.state.services.tenants
        forgotten = cache.forgotten
        assert served.redis.publish(keys.TENANTS_CHANNEL, tenant_id) == 1  # as `imgq tenant set`
        wait_for(lambda: cache.forgotten > forgotten, "the listener hears the change")
        assert client.get("/v1/limits").json()["max_queued"]["limit"] == 5


def test_while_nobody_listens_nothing_is_held(served: Served) -> None:
    cache = served.app.state.services.tenants
    snapshots: SnapshotCache = served.app.state.services.snapshots
    with served.client() as client:
        job_id = client.post("/v1/jobs", json=JOB).json()["id"]
        cache.listening = snapshots.listening = False  # as while Redis is unreachable
        try:
            del served.statements[:]
            gets = served.gets()
            for _ in range(3):
                client.get(f"/v1/jobs/{job_id}").raise_for_status()
            assert sum("FROM tenants" in s for s in served.statements) == 3
            assert served.gets() - gets == 3 * 2  # the snapshot and the dispatch count each time
        finally:
            cache.listening = snapshots.listening = True
