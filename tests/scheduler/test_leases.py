"""Job leases (real Redis; the sweep also on SQLite and PostgreSQL): who holds a dispatched job,
and what happens when its lease runs out."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from breaker import BreakerPolicy, Reason, RedisBreakerStore
from cli.stack import wait_until
from imagequeue import keys
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.queue.leases import Leases, adopt_running, sweep
from storage.db import make_engine, make_sessionmaker
from storage.models import Job, JobStatus, Tenant
from storage.tenants import create_tenant
from throttle import VendorLimits

LEASE_MS = 300


@pytest.fixture()
def client(clean_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis)
    yield client
    client.close()


@pytest.fixture()
def index(client: redis.Redis) -> WaitingIndex:
    return WaitingIndex(client)


@pytest.fixture()
def leases(client: redis.Redis) -> Leases:
    return Leases(client, LEASE_MS)


def wait_lapsed(leases: Leases, job_id: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while job_id not in {entry.job_id for entry in leases.lapsed()}:
        assert time.monotonic() < deadline, f"the lease of {job_id} did not run out"
        time.sleep(0.02)


def test_a_dispatch_leases_the_job_and_the_first_worker_takes_the_lease(
        index: WaitingIndex, leases: Leases) -> None:
    index.push([IndexEntry("j")])
    _, token = index.take(1, LEASE_MS)
    assert leases.leased(["j"]) == {"j"}
    assert leases.hold("w1", [("j", token)]) == [True]
    assert leases.hold("w1", [("j", token)]) == [True]  # renewal
    assert leases.hold("w2", [("j", token)]) == [False]  # a message delivered twice
    assert leases.hold("w1", [("j", token - 1)]) == [False]  # an older dispatch's message


def test_a_lapsed_lease_goes_back_to_its_place_and_the_old_holder_cannot_renew_it(
        index: WaitingIndex, leases: Leases) -> None:
    index.push([IndexEntry("first"), IndexEntry("second")])
    _, token = index.take(1, LEASE_MS)
    assert leases.hold("w1", [("first", token)]) == [True]
    wait_lapsed(leases, "first")
    [lapsed] = leases.lapsed()
    assert lapsed.received and lapsed.owner == f"{token}|w1"
    assert leases.reclaim("first") == 1
    assert index.position("first") == 0 and index.position("second") == 1
    assert not index.is_dispatched("first")
    assert leases.hold("w1", [("first", token)]) == [False]  # the worker that missed its renewals
    _, newer = index.take(1, LEASE_MS)
    assert leases.hold("w2", [("first", newer)]) == [True]


def test_a_renewal_just_in_time_wins_over_the_reclaim(index: WaitingIndex,
                                                     leases: Leases) -> None:
    index.push([IndexEntry("j")])
    _, token = index.take(1, LEASE_MS)
    leases.hold("w1", [("j", token)])
    wait_lapsed(leases, "j")
    leases.hold("w1", [("j", token)])
    assert leases.reclaim("j") == -1
    assert index.is_dispatched("j")


def test_after_a_flush_the_worker_still_holding_a_job_restores_its_lease_and_flight(
        client: redis.Redis, index: WaitingIndex, leases: Leases) -> None:
    index.push([IndexEntry("j")])
    _, token = index.take(1, LEASE_MS)
    leases.hold("w1", [("j", token)])
    client.flushdb()
    assert leases.hold("w1", [("j", token)]) == [True]
    assert index.is_dispatched("j") and index.is_current_dispatch("j", token)
    assert leases.leased(["j"]) == {"j"}


def test_finished_parked_and_removed_jobs_leave_no_lease(index: WaitingIndex,
                                                        leases: Leases) -> None:
    index.push([IndexEntry(j) for j in ("a", "b", "c")])
    _, token = index.take(3, LEASE_MS)
    index.finished("a")
    index.park("b", int(time.time() * 1000) + 60_000)
    index.requeue(["c"])
    assert leases.leased(["a", "b", "c"]) == set()
    assert index.redis.hlen(keys.LEASE_OWNERS) == 0


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_jobs(sessions: sessionmaker[Session], count: int, status: JobStatus) -> list[str]:
    with sessions.begin() as session:
        tenant = session.scalar(select(Tenant).limit(1)) or create_tenant(session, "t")[0]
        jobs = [Job(tenant_id=tenant.id, prompt=f"p{k}", width=1024, height=1024,
                    route="default", status=status.value, images=[]) for k in range(count)]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def status_of(sessions: sessionmaker[Session], job_id: str) -> str:
    with sessions() as session:
        return str(session.scalar(select(Job.status).where(Job.id == job_id)))


def test_the_sweep_requeues_a_dead_workers_job_frees_its_vendor_slots_and_clears_ended_ones(
        sessions: sessionmaker[Session], index: WaitingIndex, leases: Leases,
        client: redis.Redis) -> None:
    running, ended = add_jobs(sessions, 2, JobStatus.RUNNING)
    with sessions.begin() as session:
        session.get(Job, ended).status = JobStatus.SUCCEEDED.value  # type: ignore[union-attr]
    index.push([IndexEntry(running), IndexEntry(ended)])
    _, token = index.take(2, LEASE_MS)
    leases.hold("w1", [(running, token), (ended, token)])
    limits = VendorLimits(client)
    assert limits.acquire("m", 1, f"{running}:abcd", ttl_s=600)
    wait_lapsed(leases, running)
    wait_lapsed(leases, ended)

    result = sweep(sessions, index, leases, stale_s=600, limits=limits, models=["m"])

    assert (result.requeued, result.cleared) == (1, 1)
    assert status_of(sessions, running) == JobStatus.QUEUED.value
    assert index.position(running) == 0 and index.position(ended) is None
    assert not index.is_dispatched(ended)
    assert limits.acquire("m", 1, "another", ttl_s=600)  # the dead run's slot is free again


def test_the_sweep_frees_the_places_a_dead_workers_calls_held_at_the_slow_start_gate(
        sessions: sessionmaker[Session], index: WaitingIndex, leases: Leases,
        client: redis.Redis) -> None:
    dead, alive = add_jobs(sessions, 2, JobStatus.RUNNING)
    index.push([IndexEntry(dead), IndexEntry(alive)])
    _, token = index.take(2, LEASE_MS)
    leases.hold("w1", [(dead, token)])
    leases.hold("w2", [(alive, token)])
    gate = BreakerPolicy(minimum_calls=2, gate=True)
    breakers = RedisBreakerStore(client, lambda _model: gate)
    assert breakers.allow("m", keys.call_holder(dead)).allowed
    assert breakers.allow("m", keys.call_holder(alive)).allowed
    assert breakers.allow("m", keys.call_holder("a-third-job")).reason == Reason.GATE_SHUT

    def dead_lapsed() -> bool:
        leases.hold("w2", [(alive, token)])  # w2 is alive and renews its lease
        return dead in {entry.job_id for entry in leases.lapsed()}

    wait_until(dead_lapsed, "the dead worker's lease runs out", 5, poll_s=0.02)
    result = sweep(sessions, index, leases, stale_s=600, models=["m"], breakers=breakers)

    assert result.requeued == 1
    assert breakers.snapshot("m").in_flight == 1  # the live worker's call is still counted
    assert breakers.allow("m", keys.call_holder(dead)).allowed  # the requeued job gets a place


def test_a_dispatch_no_worker_received_is_extended_until_it_is_stale(
        sessions: sessionmaker[Session], index: WaitingIndex, leases: Leases) -> None:
    [job] = add_jobs(sessions, 1, JobStatus.QUEUED)
    index.push([IndexEntry(job)])
    index.take(1, LEASE_MS)
    wait_lapsed(leases, job)
    assert sweep(sessions, index, leases, stale_s=600).extended == 1
    assert index.is_dispatched(job)
    wait_lapsed(leases, job)
    assert sweep(sessions, index, leases, stale_s=0.001).requeued == 1
    assert index.position(job) == 0


def test_running_jobs_without_a_lease_are_adopted_and_taken_back_if_nobody_renews(
        sessions: sessionmaker[Session], index: WaitingIndex, leases: Leases,
        client: redis.Redis) -> None:
    [job] = add_jobs(sessions, 1, JobStatus.RUNNING)
    assert adopt_running(sessions, leases) == 1
    assert adopt_running(sessions, leases) == 0
    wait_lapsed(leases, job)
    assert sweep(sessions, index, leases, stale_s=600).requeued == 1
    assert index.position(job) == 0  # its place was lost with Redis: pushed again
    assert status_of(sessions, job) == JobStatus.QUEUED.value


def test_a_released_lease_is_requeued_at_its_place_by_the_next_sweep_long_before_it_lapses(
        sessions: sessionmaker[Session], index: WaitingIndex, client: redis.Redis) -> None:
    leases = Leases(client, 120_000)  # it would run out in two minutes
    first, second = add_jobs(sessions, 2, JobStatus.RUNNING)
    index.push([IndexEntry(first), IndexEntry(second)])
    _, token = index.take(1, 120_000)
    leases.hold("w1", [(first, token)])
    assert sweep(sessions, index, leases, stale_s=600).requeued == 0
    client.delete(keys.DISPATCH_WAKE)

    assert leases.release("w2", [(first, token)]) == 0  # not its job
    assert leases.release("w1", [(first, token - 1)]) == 0  # an older dispatch
    assert leases.release("w1", [(first, token)]) == 1
    assert client.llen(keys.DISPATCH_WAKE) == 1  # the dispatcher sweeps at once

    assert sweep(sessions, index, leases, stale_s=600).requeued == 1
    assert index.position(first) == 0 and index.position(second) == 1
    assert status_of(sessions, first) == JobStatus.QUEUED.value
    assert leases.hold("w1", [(first, token)]) == [False]  # the leaving worker cannot take it back
    assert leases.release("w1", [(first, token)]) == 0
