"""Per-tenant limits in Redis (real Redis; the rebuild also on SQLite and PostgreSQL): the running
cap at dispatch, counted from the in-flight set through everything that takes a job out of it;
the queued and budget levels, all or nothing, settled as jobs end, and rebuilt from the database
after a flush."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import keys
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.queue.leases import Leases, adopt_running, sweep
from scheduler.tenants.quotas import (
    LimitDefaults,
    LimitExceeded,
    TenantCounters,
    TenantLimits,
    period_end,
    publish_running_caps,
    set_running_cap,
)
from storage.db import make_engine, make_sessionmaker
from storage.models import Job, JobStatus, Tenant
from storage.tenants import create_tenant

LEASE_MS = 300


@pytest.fixture()
def client(clean_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis)
    yield client
    client.close()


@pytest.fixture()
def index(client: redis.Redis) -> WaitingIndex:
    return WaitingIndex(client)


def limits(**own: object) -> TenantLimits:
    values: dict[str, object] = {"rpm": 0, "max_queued": 0, "max_running": 0, "budget_usd": None,
                                 "budget_period": "day"}
    return TenantLimits(**{**values, **own})  # type: ignore[arg-type]


# --- max_running at dispatch -----------------------------------------------------------------


def test_a_tenant_at_its_running_cap_is_passed_over_and_its_jobs_keep_their_place(
        client: redis.Redis, index: WaitingIndex) -> None:
    index.push([IndexEntry(f"a{k}", "interactive", "A") for k in range(3)])
    index.push([IndexEntry(f"b{k}", "interactive", "B") for k in range(3)])
    publish_running_caps(client, {"A": 1}, default=0)

    assert index.take(3)[0] == ["a0", "b0", "b1"]  # a1 waits: A has one in flight
    assert index.position("a1") == 0 and index.position("b2") == 2  # a1 kept its place
    assert index.inflight_by_tenant() == {"A": 1, "B": 2}
    assert index.take(5)[0] == ["b2"]
    index.finished("a0")
    assert index.take(5)[0] == ["a1"]  # the finished job freed A's turn
    assert index.inflight_by_tenant() == {"A": 1, "B": 3}


def test_the_default_cap_applies_to_every_tenant_without_its_own(
        client: redis.Redis, index: WaitingIndex) -> None:
    index.push([IndexEntry(f"{t}{k}", "bulk", t) for t in "ABC" for k in range(3)])
    publish_running_caps(client, {"C": 0}, default=2)  # C: explicitly no cap
    taken = index.take(20)[0]
    assert sorted(taken) == ["A0", "A1", "B0", "B1", "C0", "C1", "C2"]
    set_running_cap(client, "A", 3)
    assert index.take(20)[0] == ["A2"]


def test_running_counts_stay_right_through_park_requeue_reclaim_cancel_and_finish(
        client: redis.Redis, index: WaitingIndex) -> None:
    leases = Leases(client, LEASE_MS)
    index.push([IndexEntry(f"a{k}", "interactive", "A") for k in range(6)])
    publish_running_caps(client, {"A": 2}, default=0)
    [first, second], token = index.take(10)
    assert (first, second) == ("a0", "a1") and index.inflight_by_tenant() == {"A": 2}

    index.park(first, int(time.time() * 1000) + 60_000)  # parked: out of flight
    assert index.inflight_by_tenant() == {"A": 1}
    assert index.take(10)[0] == ["a2"]
    assert index.requeue(["a2"]) == 1  # given back by a worker
    assert index.inflight_by_tenant() == {"A": 1}
    assert index.take(10)[0] == ["a2"]

    leases.hold("w1", [(second, token)])  # its worker dies: the lease runs out
    deadline = time.monotonic() + 5
    while second not in {e.job_id for e in leases.lapsed()}:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert leases.reclaim(second) == 1
    assert index.inflight_by_tenant() == {"A": 1}
    assert index.take(10)[0] == [second]  # back at its place, first in line

    index.remove("a2")  # canceled after its dispatch, before a worker started it
    assert index.inflight_by_tenant() == {"A": 1}
    index.finished(second)
    assert index.inflight_by_tenant() == {}
    assert index.take(10)[0] == ["a3", "a4"]
    assert client.hlen(keys.JOB_TENANTS) == 4  # a0 (parked), a3, a4, a5: no leftovers


def test_without_any_cap_the_pop_is_the_plain_queue_order(client: redis.Redis,
                                                          index: WaitingIndex) -> None:
    index.push([IndexEntry(f"a{k}", "bulk", "A") for k in range(4)])
    index.push([IndexEntry("b0", "bulk", "B"), IndexEntry("i0", "interactive", "B")])
    publish_running_caps(client, {"A": 0}, default=0)
    assert index.take(10)[0] == ["i0", "a0", "b0", "a1", "a2", "a3"]


def test_the_scan_stops_at_its_limit(client: redis.Redis) -> None:
    index = WaitingIndex(client, scan_limit=50)
    index.push([IndexEntry(f"a{k}", "interactive", "A") for k in range(100)])
    index.push([IndexEntry("b0", "interactive", "B")])
    publish_running_caps(client, {"A": 1}, default=0)
    assert index.take(5)[0] == ["a0"]  # b0 lies beyond the 50 jobs one pop looks through
    assert index.position("b0") == 99


# --- queued and budget levels ----------------------------------------------------------------


def test_max_queued_refuses_a_batch_over_it_whole_and_accepts_again_as_jobs_end(
        client: redis.Redis) -> None:
    counters = TenantCounters(client, LimitDefaults(queued_retry_after_s=7))
    now = datetime.now(UTC)
    own = limits(max_queued=5)
    counters.admit("T", own, 3, 0.0, now)
    with pytest.raises(LimitExceeded) as refused:
        counters.admit("T", own, 3, 0.0, now)  # 3 + 3 > 5: nothing of it is counted
    assert refused.value.kind == "quota_exceeded" and refused.value.retry_after_s == 7
    assert "max_queued" in refused.value.message and "5" in refused.value.message
    counters.admit("T", own, 2, 0.0, now)
    assert counters.usage("T", own, now).open_jobs == 5
    counters.admit("U", own, 5, 0.0, now)  # another tenant's count is its own
    counters.settle("T", now, 2, 0.0, 0.0)
    counters.admit("T", own, 2, 0.0, now)
    assert counters.usage("T", own, now).open_jobs == 5


def test_the_budget_reserves_at_submit_and_settles_with_the_real_cost(client: redis.Redis) -> None:
    counters = TenantCounters(client)
    now = datetime.now(UTC)
    own = limits(budget_usd=0.30, budget_period="day")
    running = counters.admit("T", own, 1, 0.134, now)
    counters.admit("T", own, 1, 0.134, now)
    with pytest.raises(LimitExceeded) as refused:
        counters.admit("T", own, 1, 0.134, now)
    assert refused.value.kind == "budget_exceeded"
    resets = period_end("day", now)
    assert abs(refused.value.retry_after_s - (resets - now).total_seconds()) <= 1
    assert resets.strftime("%Y-%m-%dT%H:%M:%SZ") in refused.value.message
    counters.settle("T", running.created_at, 1, 0.134, 0.039)  # served by a cheaper fallback
    assert counters.usage("T", own, now).spent_usd == pytest.approx(0.173)
    counters.settle("T", now, 1, 0.134, 0.0)  # failed: its reservation is given back
    assert counters.usage("T", own, now).spent_usd == pytest.approx(0.039)
    counters.admit("T", own, 1, 0.134, now)
    counters.release(counters.admit("T", own, 1, 0.1, now))  # a submit that was not committed
    assert counters.usage("T", own, now).spent_usd == pytest.approx(0.173)
    month = limits(budget_usd=0.30, budget_period="month")
    assert counters.usage("T", month, now).spent_usd == pytest.approx(0.173)  # both counted


def test_limits_resolve_own_columns_over_defaults() -> None:
    defaults = LimitDefaults(rpm=600, max_queued=100_000, max_running=0, budget_usd=50.0,
                             budget_period="month")

    class Row:
        rpm, max_queued, max_running, budget_usd, budget_period = 5, None, 2, 0.0, None

    resolved = TenantLimits.resolve(Row(), defaults)  # type: ignore[arg-type]
    assert resolved == TenantLimits(rpm=5, max_queued=100_000, max_running=2, budget_usd=None,
                                    budget_period="month")
    assert TenantLimits.resolve(None, defaults).budget_usd == 50.0


# --- rebuilt from the database ---------------------------------------------------------------


@pytest.fixture()
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def add_jobs(sessions: sessionmaker[Session], tenant: str, statuses: list[JobStatus], *,
             estimate: float = 0.1, cost: float = 0.0,
             created_at: datetime | None = None) -> list[str]:
    with sessions.begin() as session:
        row = session.scalar(select(Tenant).where(Tenant.name == tenant))
        tenant_id = row.id if row else create_tenant(session, tenant)[0].id
        jobs = [Job(tenant_id=tenant_id, prompt="p", width=1024, height=1024, route="default",
                    status=s.value, images=[], estimated_cost_usd=estimate, cost_usd=cost,
                    created_at=created_at or datetime.now(UTC)) for s in statuses]
        session.add_all(jobs)
        session.flush()
        return [j.id for j in jobs]


def tenant_id(sessions: sessionmaker[Session], name: str) -> str:
    with sessions() as session:
        return str(session.scalar(select(Tenant.id).where(Tenant.name == name)))


def test_a_flush_is_healed_from_the_database(sessions: sessionmaker[Session],
                                             client: redis.Redis) -> None:
    now = datetime.now(UTC)
    add_jobs(sessions, "acme", [JobStatus.QUEUED] * 3 + [JobStatus.RUNNING], estimate=0.1)
    add_jobs(sessions, "acme", [JobStatus.SUCCEEDED, JobStatus.FAILED], estimate=0.1, cost=0.05)
    add_jobs(sessions, "acme", [JobStatus.SUCCEEDED], cost=9.0,
             created_at=now - timedelta(days=40))  # an earlier month: not this period's
    add_jobs(sessions, "other", [JobStatus.QUEUED], estimate=1.0)
    acme, other = tenant_id(sessions, "acme"), tenant_id(sessions, "other")
    counters = TenantCounters(client)
    counters.admit(acme, limits(), 1, 0.5, now)  # counted, its job never committed (a crash)
    client.hset(keys.TENANT_OPEN, "gone", 4)  # drift of a tenant with nothing open

    assert counters.rebuild(sessions, now) > 0
    day, month = limits(budget_period="day"), limits(budget_period="month")
    assert counters.usage(acme, day, now).open_jobs == 4
    assert counters.usage(acme, day, now).spent_usd == pytest.approx(0.4 + 0.1)
    assert counters.usage(acme, month, now).spent_usd == pytest.approx(0.4 + 0.1)
    assert counters.usage(other, day, now).spent_usd == pytest.approx(1.0)
    assert counters.usage("gone", day, now).open_jobs == 0
    assert counters.rebuild(sessions, now) == 0  # nothing more to correct

    client.flushdb()
    counters.rebuild(sessions, now, budget_tenants=[acme])
    assert counters.usage(acme, day, now) == counters.usage(acme, month, now)
    assert counters.usage(acme, day, now).open_jobs == 4
    assert counters.usage(acme, day, now).spent_usd == pytest.approx(0.5)
    assert counters.usage(other, day, now).spent_usd == 0.0  # not asked for
    assert counters.usage(other, day, now).open_jobs == 1


def test_after_a_flush_running_jobs_count_against_their_tenant_again(
        sessions: sessionmaker[Session], client: redis.Redis, index: WaitingIndex) -> None:
    leases = Leases(client, LEASE_MS)
    running = add_jobs(sessions, "acme", [JobStatus.RUNNING, JobStatus.RUNNING])
    queued = add_jobs(sessions, "acme", [JobStatus.QUEUED])
    acme = tenant_id(sessions, "acme")
    index.push([IndexEntry(j, "interactive", acme) for j in running + queued])
    publish_running_caps(client, {acme: 2}, default=0)
    assert index.take(2)[0] == running
    client.flushdb()  # Redis lost everything; the database still says two are running

    from scheduler.queue.jobs import reconcile

    assert reconcile(sessions, index) == 1
    assert adopt_running(sessions, leases) == 2
    publish_running_caps(client, {acme: 2}, default=0)
    assert index.inflight_by_tenant() == {acme: 2}
    assert index.take(5)[0] == []  # still at its cap
    deadline = time.monotonic() + 5  # nobody renews the adopted leases: they run out
    while len(leases.lapsed()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert sweep(sessions, index, leases, stale_s=600).requeued == 2
    assert index.inflight_by_tenant() == {}
    assert len(index.take(5)[0]) == 2
