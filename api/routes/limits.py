"""/v1/limits: the calling tenant's limits and where it stands against each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from api.deps import ServicesDep, TenantDep
from api.ratelimit import STATE_KEY, RateState
from api.schemas import ApiErrorResponse
from scheduler.tenants.quotas import TenantLimits, period_end
from storage.models import utcnow

router = APIRouter(prefix="/v1/limits", tags=["limits"])
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ApiErrorResponse, "description": "Missing or invalid API key"},
    429: {"model": ApiErrorResponse, "description": "Over the requests-per-minute limit"},
    503: {"model": ApiErrorResponse, "description": "Redis or the database is unreachable"},
}


class RateOut(BaseModel):
    limit: int = Field(description="Requests per minute (0 = no limit).")
    remaining: int | None = Field(description="Left in the current minute, this request counted.")
    reset_seconds: int | None = Field(description="Until the oldest counted request leaves "
                                                  "the one-minute window.")


class CountOut(BaseModel):
    limit: int = Field(description="0 = no limit.")
    used: int


class BudgetOut(BaseModel):
    limit_usd: float | None = Field(description="None = no budget.")
    period: str = Field(description="`day` or `month` (UTC).")
    used_usd: float = Field(description="Spent, or reserved by jobs not finished yet, in this "
                                        "period (by the jobs created in it).")
    resets_at: datetime


class LimitsOut(BaseModel):
    tenant: str
    rpm: RateOut
    max_queued: CountOut = Field(description="Jobs accepted and not finished (waiting or "
                                             "running).")
    max_running: CountOut = Field(description="Jobs handed to workers and not finished.")
    budget: BudgetOut


@router.get("", response_model=LimitsOut, responses=ERRORS)
def get_limits(request: Request, tenant: TenantDep, svc: ServicesDep) -> LimitsOut:
    """The tenant's limits in force (its own, or the deployment's defaults) and its usage."""
    limits = TenantLimits.resolve(tenant, svc.limit_defaults)
    now = utcnow()
    usage = svc.counters.usage(tenant.id, limits, now)
    running = svc.queue.index.inflight_by_tenant().get(tenant.id, 0)
    rate = getattr(request.state, STATE_KEY, None)
    rate = rate if isinstance(rate, RateState) else None
    return LimitsOut(
        tenant=tenant.name,
        rpm=RateOut(limit=limits.rpm, remaining=rate.remaining if rate else None,
                    reset_seconds=rate.reset_s if rate else None),
        max_queued=CountOut(limit=limits.max_queued, used=usage.open_jobs),
        max_running=CountOut(limit=limits.max_running, used=running),
        budget=BudgetOut(limit_usd=limits.budget_usd, period=limits.budget_period,
                         used_usd=round(usage.spent_usd, 6),
                         resets_at=period_end(limits.budget_period, now)))
