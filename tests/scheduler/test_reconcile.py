"""Reconcile passes (real Redis; SQLite and PostgreSQL): between full passes only the jobs created
lately are read, a flush makes the next pass read them all, and dispatch goes on while a pass is
held up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import wait_until
from imagequeue import keys
from imagequeue.settings import Settings
from scheduler.dispatcher import Dispatcher, make_sender
from scheduler.queue import heartbeats
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.queue.jobs import reconcile
from scheduler.queue.reconcile import Reconciler
from storage.db import make_engine, make_sessionmaker
from storage.models import Job, JobStatus
from storage.tenants import create_tenant


@pytest.fixture()
def client(clean_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis)
    client.set(keys.GENERATION, "test")  # as the active dispatcher keeps it
    yield client
    client.close()


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_queued(sessions: sessionmaker[Session], count: int, age_s: float = 0.0,
               lane: str = "interactive", priority: int = 0) -> list[str]:
    created = datetime.now(UTC) - timedelta(seconds=age_s)
    with sessions.begin() as session:
        tenant, _ = create_tenant(session, f"t-{created.timestamp()}-{lane}-{priority}")
        jobs = [Job(tenant_id=tenant.id, prompt="p", width=1024, height=1024, route="default",
                    lane=lane, priority=priority, status=JobStatus.QUEUED.value, images=[],
                    created_at=created + timedelta(microseconds=k)) for k in range(count)]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def test_a_full_pass_indexes_every_missing_queued_job_in_its_class_once(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    index = WaitingIndex(client)
    indexed = add_queued(sessions, 3, age_s=3600)
    index.push([IndexEntry(j) for j in indexed])
    lost = add_queued(sessions, 7, age_s=1800, lane="bulk", priority=-3)
    lost += add_queued(sessions, 2, priority=99)  # beyond the highest class: clamped

    assert reconcile(sessions, index, chunk=4) == 9  # several chunks, none read twice
    assert reconcile(sessions, index, chunk=4) == 0
    # Priority 10 (clamped) first, then priority 0, then the bulk class, each in arrival order.
    assert index.head(20) == lost[-2:] + indexed + lost[:7]
    assert index.missing([(j, "bulk", -3) for j in lost[:7]]) == set()
    assert index.missing([(j, "interactive", 0) for j in lost[:7]]) == set(lost[:7])


def test_between_full_passes_only_jobs_created_lately_are_read(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    index = WaitingIndex(client)
    reconciler = Reconciler(sessions, index, lookback_s=60, full_every_s=3600)
    old = add_queued(sessions, 5, age_s=600)
    assert reconciler.run_pass() == 5  # the first pass reads everything
    index.remove(old[0])  # lost without a flush: only a full pass can see it
    recent = add_queued(sessions, 2, age_s=30)  # committed, never pushed

    assert reconciler.run_pass() == 2  # the recent ones, within the lookback
    assert index.position(old[0]) is None
    reconciler.request_full()
    assert reconciler.run_pass() == 1
    assert index.position(old[0]) is not None
    assert all(index.position(j) is not None for j in recent)


def test_a_flush_makes_the_next_pass_read_every_queued_job(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    index = WaitingIndex(client)
    reconciler = Reconciler(sessions, index, lookback_s=60, full_every_s=3600)
    jobs = add_queued(sessions, 4, age_s=3600)
    reconciler.run_pass()
    assert reconciler.run_pass() == 0
    assert reconciler.mark() is not None

    client.flushdb()  # the mark goes with the index
    client.set(keys.GENERATION, "again")

    assert reconciler.run_pass() == 4
    assert all(index.position(j) is not None for j in jobs)


def test_no_mark_is_kept_once_the_generation_marker_is_gone(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    """A flush during a pass leaves no mark behind, so the pass after it reads everything."""
    index = WaitingIndex(client)
    reconciler = Reconciler(sessions, index, lookback_s=60, full_every_s=3600)
    add_queued(sessions, 2, age_s=3600)
    client.delete(keys.GENERATION)
    reconciler.run_pass()
    assert reconciler.mark() is None


def test_an_older_mark_makes_the_pass_read_back_to_it(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    """Redis restored from an older snapshot holds the older mark: the pass reads back over
    the jobs the snapshot lacks."""
    index = WaitingIndex(client)
    reconciler = Reconciler(sessions, index, lookback_s=60, full_every_s=3600)
    reconciler.run_pass()
    older = reconciler.mark()
    assert older is not None
    client.set(keys.RECONCILE_MARK, repr((older - timedelta(seconds=600)).timestamp()))
    jobs = add_queued(sessions, 3, age_s=400)  # pushed after that snapshot, then lost with it

    assert reconciler.run_pass() == 3
    assert all(index.position(j) is not None for j in jobs)


def test_dispatch_goes_on_while_a_reconcile_pass_is_held_up(
        postgres_url: str, clean_redis: str) -> None:
    from storage.db import drop_schema, migrate

    drop_schema(postgres_url)
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_sessionmaker(engine)
    client = redis.Redis.from_url(clean_redis)
    lost = add_queued(sessions, 1, age_s=60)  # committed, not indexed: the pass must read jobs
    locking = create_engine(postgres_url)
    locker = locking.connect()
    dispatcher = Dispatcher(client, sessions, make_sender(Settings(redis_url=clean_redis)),
                            interval_s=0.05, reconcile_every_s=0.2)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    try:
        locker.execute(text("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE"))  # held until rollback
        heartbeats.heartbeat(client, "w@host", 2, ttl_s=60)
        thread.start()
        index = WaitingIndex(client)
        wait_until(lambda: dispatcher.leader, "the dispatcher is active", 10)
        index.push([IndexEntry("probe")])

        wait_until(lambda: index.is_dispatched("probe"), "the probe is dispatched", 10)
        assert index.position(lost[0]) is None  # the pass is still waiting on the lock
        locker.rollback()
        wait_until(lambda: index.is_dispatched(lost[0]) or index.position(lost[0]) is not None,
                   "the held-up pass indexes the lost job", 10)
    finally:
        locker.rollback()
        locker.close()
        locking.dispose()
        dispatcher.stop()
        thread.join(timeout=10)
        client.close()
        engine.dispose()
        drop_schema(postgres_url)
