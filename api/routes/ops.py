"""Probes for load balancers and orchestrators: ``/healthz`` (liveness) and ``/readyz`` (readiness).

``/healthz`` answers 200 as long as the process serves HTTP: restarting the API would not bring a
database back. ``/readyz`` asks the database (``SELECT 1``) and Redis (``PING``), each within
``ready_timeout_s``, and answers 503 with ``Retry-After`` while either is unreachable, so traffic
can be routed elsewhere until it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from api.errors import describe
from api.services import Services

router = APIRouter(tags=["ops"])


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='Per dependency: "ok" or "unreachable: <error>".',
                                   examples=[{"database": "ok", "redis": "ok"}])


@router.get("/healthz", response_model=Liveness)
def healthz() -> Liveness:
    """Liveness: 200 while the process serves requests, whatever the database and Redis do."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses={
    503: {"model": Readiness, "description": "The database or Redis is unreachable; see "
                                             "`checks` and retry after `Retry-After` seconds"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers `SELECT 1` and Redis answers `PING`, each in time."""
    svc: Services = request.app.state.services
    timeout_s = svc.settings.ready_timeout_s
    database, redis_ = await asyncio.gather(
        _check(lambda: _select_one(svc), timeout_s),
        _check(svc.redis.ping, timeout_s),
    )
    checks = {"database": database, "redis": redis_}
    ready = all(v == "ok" for v in checks.values())
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    headers = None if ready else {"Retry-After": str(svc.settings.retry_after_s)}
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503, headers=headers)


def _select_one(svc: Services) -> None:
    with svc.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _check(probe: Callable[[], Any], timeout_s: float) -> str:
    """``"ok"`` or ``"unreachable: <error>"``; a probe still hanging after ``timeout_s`` is
    abandoned to its thread, which finishes on its own."""
    try:
        with anyio.fail_after(timeout_s):
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except TimeoutError:
        return f"unreachable: no answer within {timeout_s:g} s"
    except Exception as exc:  # noqa: BLE001 - whatever it is, the dependency is not usable
        return f"unreachable: {describe(exc)}"
    return "ok"
