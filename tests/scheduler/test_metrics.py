"""The scheduler's scrape-time gauges (``scheduler/metrics.py``) against real Redis and a real
database: jobs by status and lane, the waiting index, breaker states and the transitions logged
since the process started; and a scrape that still answers while Redis is unreachable."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from breaker import RedisBreakerStore
from breaker.factory import policy_source
from cli.stack import free_port
from imagequeue.failopen import fail_open_redis
from imagequeue.metrics import SCHEDULER_METRICS, exposition, registry_for
from imagequeue.settings import Settings
from scheduler.metrics import SchedulerCollector
from scheduler.queue.index import IndexEntry, WaitingIndex
from storage.db import make_engine, make_sessionmaker
from storage.models import Job
from storage.tenants import create_tenant

MODELS = ("m1", "m2")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: SchedulerCollector) -> Samples:
    text = exposition(registry_for((*SCHEDULER_METRICS, collector)))[0].decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def one(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def store_for(url: str) -> RedisBreakerStore:
    return RedisBreakerStore(fail_open_redis(url), policy_source(Settings(), {}))


def transitions(found: Samples) -> Samples:
    return {(n, labels): v for (n, labels), v in found.items()
            if n == "imgq_breaker_transitions_total"}


def test_jobs_queue_and_breakers_are_read_at_scrape_time(
        clean_redis: str, sessions: sessionmaker[Session]) -> None:
    store = store_for(clean_redis)
    store.force_open("m2", "before the scheduler started")  # not counted: it came before
    with sessions.begin() as session:
        tenant, _ = create_tenant(session, "t")
        session.flush()
        for status, lane in [("queued", "interactive"), ("queued", "interactive"),
                             ("running", "bulk"), ("succeeded", "interactive")]:
            session.add(Job(tenant_id=tenant.id, prompt="p", width=64, height=64, route="default",
                            lane=lane, status=status))
    client = redis.Redis.from_url(clean_redis)
    WaitingIndex(client).push([IndexEntry("j1", "interactive", "t"), IndexEntry("j2", "bulk", "t"),
                               IndexEntry("j3", "bulk", "t")])
    collector = SchedulerCollector(sessions, fail_open_redis(clean_redis), store, MODELS)
    store.force_open("m1", "maintenance")
    store.reset("m1")

    found = scrape(collector)
    assert {(dict(labels)["status"], dict(labels)["lane"]): v for (name, labels), v in found.items()
            if name == "imgq_jobs"} == {
        ("queued", "interactive"): 2, ("queued", "bulk"): 0,
        ("running", "interactive"): 0, ("running", "bulk"): 1}  # finished jobs are not gauged
    assert (one(found, "imgq_queue_depth", lane="interactive"),
            one(found, "imgq_queue_depth", lane="bulk")) == (1, 2)
    assert one(found, "imgq_breaker_state", model="m2", state="forced_open") == 1
    assert one(found, "imgq_breaker_state", model="m1", state="closed") == 1
    assert {labels: v for (_, labels), v in transitions(found).items()} == {
        (("from_state", "closed"), ("model", "m1"), ("to_state", "forced_open")): 1,
        (("from_state", "forced_open"), ("model", "m1"), ("to_state", "closed")): 1}
    assert transitions(scrape(collector)) == transitions(found)  # each one counted once
    assert one(found, "imgq_new_job_eta_start_seconds", lane="interactive") is None  # no snapshot
    assert {one(found, "imgq_scrape_source_up", source=s)
            for s in ("database", "redis", "breaker")} == {1.0}
    client.close()


def test_a_scrape_answers_while_redis_is_unreachable_and_says_which_source_failed(
        sessions: sessionmaker[Session]) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    collector = SchedulerCollector(sessions, fail_open_redis(nowhere), store_for(nowhere), MODELS)
    found = scrape(collector)
    assert (one(found, "imgq_scrape_source_up", source="database"),
            one(found, "imgq_scrape_source_up", source="redis"),
            one(found, "imgq_scrape_source_up", source="breaker")) == (1, 0, 0)
    assert one(found, "imgq_jobs", status="queued", lane="interactive") == 0
    assert not [name for name, _ in found if name.startswith(("imgq_queue", "imgq_breaker_state"))]
