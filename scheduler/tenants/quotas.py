"""Per-tenant limits: jobs queued at once, jobs running at once, and a spend budget per period.

Requests per minute are counted by the ``limits`` package (``api/ratelimit.py``), which is made
for that: events in a moving time window. The three limits here are not windows of events but
levels that go down as well as up, and ``limits`` has nothing for those, so they are our own
Redis structures, cluster-wide like everything in the waiting index:

* **Queued** (``max_queued``): jobs accepted and not finished yet (waiting, parked or running), a
  HASH tenant -> count. ``admit`` checks and counts a submit in one Lua call, before the rows are
  committed, so a batch that would go over is refused whole; each job's end (the worker's
  terminal write, a cancel) counts it out again.
* **Budget** (``budget_usd`` per ``day`` or ``month``, UTC): micro-dollars spent or reserved by
  the jobs created in each period, one HASH per period and tenant field. A submit reserves its
  estimate (the catalogue price of the route's first model x ``n``, kept on the job row as
  ``estimated_cost_usd``); the job's end settles it with the real cost (``jobs.cost_usd``): a
  failed or canceled job gives back what it did not spend. Over budget, new jobs are refused;
  those already accepted run and finish. Both periods are always counted, so changing a
  tenant's period takes effect at once.
* **Running** (``max_running``): not a counter at all. The dispatcher's pop (``pop.lua``) counts
  each tenant's jobs in the in-flight set as it runs, from a HASH job -> tenant that the index
  keeps for every job it holds, and passes over a job whose tenant is at its cap (the job keeps
  its place). Whatever takes a job out of flight (finish, park, requeue, lease reclaim, cancel)
  therefore counts it out too, and nothing can drift. The caps live in a HASH the dispatcher
  refreshes from the database (``publish_running_caps``) and ``imgq tenant`` writes at once.

The database is the source of truth. ``rebuild`` (the dispatcher's reconcile, at once after
Redis lost its data) recounts the queued and budget levels from it. It adds the difference
between the database's figure and what Redis held when the recount began, so the submits and
ends that Redis counted meanwhile are kept; a level can be off by the few jobs that changed
state in the instant of a recount until the next one. While Redis is unreachable the limits are
not enforced (the submit is committed as before and counted by the next rebuild): an outage of
the counter never refuses work the database accepted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import keys
from imagequeue.lua import lua_source
from scheduler.errors import QueueError
from storage.models import TERMINAL_STATUSES, UNFINISHED_STATUSES, Job, Tenant

log = logging.getLogger(__name__)

MICRO = 1_000_000  # budgets are counted in micro-dollars, integers in Redis
PERIODS = ("day", "month")
DEFAULT_KEY = "*"  # the field of the running caps HASH that holds the default cap
# A period's spend is settled by jobs created in it, which may end up to a day later.
PERIOD_TTL_S = {"day": 3 * 86_400, "month": 62 * 86_400}



def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# --- limits of a tenant --------------------------------------------------------------------


@dataclass(frozen=True)
class LimitDefaults:
    """The limits of a tenant whose own column is NULL (``IMGQ_TENANT_*``)."""

    rpm: int = 600
    max_queued: int = 100_000
    max_running: int = 0
    budget_usd: float | None = None
    budget_period: str = "month"
    queued_retry_after_s: int = 10

    @classmethod
    def from_settings(cls, settings: Any) -> LimitDefaults:
        return cls(rpm=settings.tenant_rpm, max_queued=settings.tenant_max_queued,
                   max_running=settings.tenant_max_running, budget_usd=settings.tenant_budget_usd,
                   budget_period=settings.tenant_budget_period,
                   queued_retry_after_s=settings.tenant_queued_retry_after_s)


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's limits in force; 0 (or no budget) means no limit."""

    rpm: int
    max_queued: int
    max_running: int
    budget_usd: float | None
    budget_period: str

    @classmethod
    def resolve(cls, tenant: Tenant | None, defaults: LimitDefaults) -> TenantLimits:
        def pick(column: str) -> Any:
            own = getattr(tenant, column, None)
            return getattr(defaults, column) if own is None else own

        budget = pick("budget_usd")
        return cls(rpm=max(0, int(pick("rpm"))), max_queued=max(0, int(pick("max_queued"))),
                   max_running=max(0, int(pick("max_running"))),
                   budget_usd=float(budget) if budget is not None and budget > 0 else None,
                   budget_period=str(pick("budget_period")))


def limits_of(session: Session, tenant_id: str, defaults: LimitDefaults) -> TenantLimits:
    return TenantLimits.resolve(session.get(Tenant, tenant_id), defaults)


# --- periods ---------------------------------------------------------------------------------


def period_start(period: str, at: datetime) -> datetime:
    at = at.astimezone(UTC)
    if period == "day":
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def period_end(period: str, at: datetime) -> datetime:
    """When the period holding ``at`` ends and the budget starts again (UTC)."""
    start = period_start(period, at)
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def spend_key(period: str, at: datetime) -> str:
    start = period_start(period, at)
    return keys.tenant_spend(period, start.strftime("%Y-%m-%d" if period == "day" else "%Y-%m"))


def to_micro(usd: float) -> int:
    return int(round(usd * MICRO))


# --- refusals --------------------------------------------------------------------------------


class LimitExceeded(QueueError):
    """A tenant limit refuses the request: HTTP 429 with Retry-After (``api/ratelimit.py``)."""

    def __init__(self, kind: str, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.kind = kind  # "rate_limited", "quota_exceeded" or "budget_exceeded"
        self.message = message
        self.retry_after_s = max(1, int(retry_after_s))
        self.headers: dict[str, str] = {}  # extra response fields (the rate limit's)


def _usd(value: float) -> str:
    """Dollars and cents, or down to the hundredth of a cent when a price needs it."""
    return f"${value:,.2f}" if round(value, 2) == round(value, 4) else f"${value:,.4f}"


def quota_exceeded(limits: TenantLimits, open_jobs: int, jobs: int,
                   retry_after_s: int) -> LimitExceeded:
    room = max(0, limits.max_queued - open_jobs)
    return LimitExceeded("quota_exceeded", (
        f"tenant limit max_queued: at most {limits.max_queued} jobs waiting or running at once; "
        f"{open_jobs} are, and this request adds {jobs} (room for {room}). Nothing was queued. "
        f"The count goes down as your jobs finish (or are canceled); retry in {retry_after_s} s"),
        retry_after_s)


def budget_exceeded(limits: TenantLimits, spent_usd: float, cost_usd: float,
                    now: datetime) -> LimitExceeded:
    assert limits.budget_usd is not None
    resets = period_end(limits.budget_period, now)
    retry = math.ceil((resets - now).total_seconds())
    return LimitExceeded("budget_exceeded", (
        f"tenant budget: {_usd(limits.budget_usd)} per {limits.budget_period}; "
        f"{_usd(spent_usd)} is spent or reserved by jobs already accepted, and this request is "
        f"estimated at {_usd(cost_usd)}. Nothing was queued; jobs already accepted still run. "
        f"The budget resets at {resets.strftime('%Y-%m-%dT%H:%M:%SZ')} (in {retry} s)"), retry)


# --- counters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """What ``admit`` counted for a submit, to give back if the submit fails after all."""

    tenant_id: str
    jobs: int
    cost_micro: int
    created_at: datetime


@dataclass(frozen=True)
class Usage:
    open_jobs: int
    spent_usd: float  # spent or reserved in the tenant's current budget period


class TenantCounters:
    """The queued and budget levels in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis, defaults: LimitDefaults | None = None) -> None:
        self.redis = client
        self.defaults = defaults or LimitDefaults()
        self._admit = client.register_script(lua_source("scheduler.tenants", "tenant_admit.lua"))

    def admit(self, tenant_id: str, limits: TenantLimits, jobs: int, cost_usd: float,
              created_at: datetime) -> Reservation:
        """Count ``jobs`` more open jobs and their estimated cost, or raise LimitExceeded."""
        cost = to_micro(cost_usd)
        budget = to_micro(limits.budget_usd) if limits.budget_usd is not None else -1
        flag, open_jobs, spent = (int(v) for v in self._admit(
            keys=[keys.TENANT_OPEN, spend_key("day", created_at), spend_key("month", created_at)],
            args=[tenant_id, jobs, limits.max_queued, cost, budget,
                  2 if limits.budget_period == "day" else 3,
                  PERIOD_TTL_S["day"], PERIOD_TTL_S["month"]]))
        if flag == 1:
            raise quota_exceeded(limits, open_jobs, jobs, self.defaults.queued_retry_after_s)
        if flag == 2:
            raise budget_exceeded(limits, spent / MICRO, cost_usd, created_at)
        return Reservation(tenant_id, jobs, cost, created_at)

    def release(self, reservation: Reservation) -> None:
        """A submit that was counted but not committed."""
        self._add(reservation.tenant_id, reservation.created_at, -reservation.jobs,
                  -reservation.cost_micro)

    def settle(self, tenant_id: str, created_at: datetime, jobs: int, estimated_usd: float,
               cost_usd: float) -> None:
        """``jobs`` jobs created at ``created_at`` ended: out of the open count, and their
        reservation replaced by what they really cost."""
        self._add(tenant_id, created_at, -jobs, to_micro(cost_usd) - to_micro(estimated_usd))

    def _add(self, tenant_id: str, created_at: datetime, jobs: int, cost_micro: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        if jobs:
            pipe.hincrby(keys.TENANT_OPEN, tenant_id, jobs)
        if cost_micro:
            for period in PERIODS:
                key = spend_key(period, created_at)
                pipe.hincrby(key, tenant_id, cost_micro)
                pipe.expire(key, PERIOD_TTL_S[period])
        pipe.execute()

    def usage(self, tenant_id: str, limits: TenantLimits, now: datetime) -> Usage:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.TENANT_OPEN, tenant_id)
        pipe.hget(spend_key(limits.budget_period, now), tenant_id)
        open_jobs, spent = pipe.execute()
        return Usage(max(0, int(open_jobs or 0)), max(0, int(spent or 0)) / MICRO)

    # --- rebuilding from the database ------------------------------------------------------

    def rebuild(self, sessions: sessionmaker[Session], now: datetime,
                budget_tenants: Iterable[str] | None = None) -> int:
        """Recount the open jobs of every tenant, and the spend of the current day and month of
        ``budget_tenants`` (None: every tenant), from the database. Returns how many counters
        were corrected."""
        corrected = self._rebuild_open(sessions)
        tenants = None if budget_tenants is None else sorted(set(budget_tenants))
        if tenants is None or tenants:
            for period in PERIODS:
                corrected += self._rebuild_spend(sessions, period, now, tenants)
        return corrected

    def _rebuild_open(self, sessions: sessionmaker[Session]) -> int:
        before = {_text(k): int(v) for k, v in self.redis.hgetall(keys.TENANT_OPEN).items()}
        with sessions() as session:
            counted = {t: int(n) for t, n in session.execute(
                select(Job.tenant_id, func.count()).where(Job.status.in_(UNFINISHED_STATUSES))
                .group_by(Job.tenant_id)).all()}
        return self._correct(keys.TENANT_OPEN, before, counted, None)

    def _rebuild_spend(self, sessions: sessionmaker[Session], period: str, now: datetime,
                       tenants: list[str] | None) -> int:
        key = spend_key(period, now)
        if tenants is None:
            before = {_text(k): int(v) for k, v in self.redis.hgetall(key).items()}
        else:
            values = self.redis.hmget(key, tenants)
            before = {t: int(v) for t, v in zip(tenants, values, strict=True) if v is not None}
        cost = case((Job.status.in_(TERMINAL_STATUSES), Job.cost_usd),
                    else_=Job.estimated_cost_usd)
        query = (select(Job.tenant_id, func.coalesce(func.sum(cost), 0.0))
                 .where(Job.created_at >= period_start(period, now),
                        Job.created_at < period_end(period, now)))
        if tenants is not None:
            query = query.where(Job.tenant_id.in_(tenants))
        with sessions() as session:
            counted = {t: to_micro(float(s)) for t, s in
                       session.execute(query.group_by(Job.tenant_id)).all()}
        return self._correct(key, before, counted, PERIOD_TTL_S[period])

    def _correct(self, key: str, before: dict[str, int], counted: dict[str, int],
                 ttl_s: int | None) -> int:
        pipe = self.redis.pipeline(transaction=False)
        corrected = 0
        for tenant in set(before) | set(counted):
            delta = counted.get(tenant, 0) - before.get(tenant, 0)
            if delta:
                pipe.hincrby(key, tenant, delta)
                corrected += 1
        if corrected and ttl_s is not None:
            pipe.expire(key, ttl_s)
        pipe.execute()
        return corrected


def budget_tenants(session: Session, defaults: LimitDefaults) -> list[str] | None:
    """The tenants whose spend must be right: every tenant when there is a default budget."""
    if defaults.budget_usd is not None and defaults.budget_usd > 0:
        return None
    return list(session.scalars(select(Tenant.id).where(Tenant.budget_usd > 0)))


# --- running caps ----------------------------------------------------------------------------


def load_running_caps(session: Session) -> dict[str, int]:
    """The tenants whose own max_running is set (0 = explicitly no cap)."""
    return {t: max(0, int(cap or 0)) for t, cap in session.execute(
        select(Tenant.id, Tenant.max_running).where(Tenant.max_running.is_not(None))).all()}


def publish_running_caps(client: redis.Redis, caps: dict[str, int], default: int) -> None:
    """Replace the caps the dispatcher's pop reads (one transaction)."""
    mapping: dict[str | bytes, str | int] = {DEFAULT_KEY: max(0, default)}
    mapping.update(caps)
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.TENANT_MAX_RUNNING)
    pipe.hset(keys.TENANT_MAX_RUNNING, mapping=mapping)  # type: ignore[arg-type]
    pipe.execute()


def set_running_cap(client: redis.Redis, tenant_id: str, cap: int | None) -> None:
    """One tenant's cap at once (None: the default applies); the next refresh agrees."""
    if cap is None:
        client.hdel(keys.TENANT_MAX_RUNNING, tenant_id)
    else:
        client.hset(keys.TENANT_MAX_RUNNING, tenant_id, max(0, cap))


def running_caps(client: redis.Redis) -> dict[str, int]:
    return {_text(k): int(v) for k, v in client.hgetall(keys.TENANT_MAX_RUNNING).items()}
