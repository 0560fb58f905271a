"""Operator endpoints: read every model's breaker and open, close, disable or reset one.

Authenticated by the admin token (``IMGQ_ADMIN_TOKEN``), never by a tenant's API key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import redis
from fastapi import APIRouter, Body, HTTPException, Query
from pydantic import BaseModel, Field

from api import breakers
from api.deps import AdminOnly, ServicesDep
from api.schemas import ApiErrorResponse
from api.services import Services

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminOnly], responses={
    400: {"model": ApiErrorResponse, "description": "The body is not valid JSON"},
    401: {"model": ApiErrorResponse, "description": "Missing or wrong admin token"},
    403: {"model": ApiErrorResponse, "description": "Admin endpoints are disabled "
                                                    "(IMGQ_ADMIN_TOKEN is not set)"},
    404: {"model": ApiErrorResponse, "description": "No such model"},
    503: {"model": ApiErrorResponse, "description": "Redis (the breaker store) is unreachable"},
})
T = TypeVar("T")

Transitions = Annotated[int, Query(ge=0, le=100, description="Last transitions to include per model.")]


class ActionBody(BaseModel):
    reason: str | None = Field(default=None, max_length=500,
                               description="Why (for `open`); shown in the breaker's event log.")


def _known(svc: Services, model: str) -> None:
    try:
        breakers.check_model(model, svc.catalogue.models)
    except breakers.UnknownModel as exc:
        raise HTTPException(404, str(exc)) from None


def _from_store(read: Callable[[], T]) -> T:
    try:
        return read()
    except redis.RedisError as exc:
        raise HTTPException(503, f"the breaker store (Redis) is unreachable: {exc}") from None


@router.get("/breakers")
def list_breakers(svc: ServicesDep, transitions: Transitions = 5) -> dict[str, Any]:
    """Every model's breaker: state, health colour, window figures and last transitions."""
    models = _from_store(lambda: breakers.all_reports(svc.breakers, svc.catalogue.models, transitions))
    return {"breaker_mode": svc.settings.breaker_mode, "models": models}


@router.get("/breakers/{model}")
def get_breaker(model: str, svc: ServicesDep, transitions: Transitions = 20) -> dict[str, Any]:
    """One model's breaker, with more of its history."""
    _known(svc, model)
    return _from_store(lambda: breakers.model_report(svc.breakers, model, transitions))


@router.post("/breakers/{model}/{action}")
def act_on_breaker(model: str, action: breakers.Action, svc: ServicesDep,
                   body: Annotated[ActionBody | None, Body()] = None) -> dict[str, Any]:
    """`open` (forced open until closed), `close`, `disable` (always allow) or `reset`.
    Answers with the breaker as it is afterwards."""
    _known(svc, model)
    reason = body.reason if body else None

    def act() -> dict[str, Any]:
        breakers.apply_action(svc.breakers, model, action, reason)
        return breakers.model_report(svc.breakers, model)

    return _from_store(act)
