"""Requests per minute per tenant, and the HTTP form of every tenant limit.

The request rate is counted by the ``limits`` package in Redis (moving window: each tenant's
last minute of requests, cluster-wide across API processes), once per authenticated request,
when the tenant dependency has found the caller (``api/deps.py``). Every answer to a tenant
carries the IETF RateLimit fields of that limit:

    RateLimit-Limit: 600          requests per minute
    RateLimit-Remaining: 597      left in the current minute
    RateLimit-Reset: 41           seconds until the oldest counted request leaves the window
    RateLimit-Policy: 600;w=60

Over any tenant limit the answer is a 429 in the one error shape with ``Retry-After``: type
``rate_limited`` (requests per minute), ``quota_exceeded`` (max_queued) or ``budget_exceeded``
(the spend budget), the message naming the limit and when it resets.

While Redis is unreachable the rate is not counted (no RateLimit fields): the request goes on and
fails or succeeds as it did before limits existed (a read needing Redis is a 503, a submit is
committed and accepted). After a failure the limiter stays off for a second, so a hung Redis does
not add its timeout to every request.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response, outage_warnings
from imagequeue import keys
from scheduler.outages import REDIS_ERRORS
from scheduler.tenants.quotas import LimitExceeded

STATE_KEY = "imgq_rate"
WINDOW_S = 60
SKIP_AFTER_FAILURE_S = 1.0


@dataclass(frozen=True)
class RateState:
    """Where a tenant stands against its requests-per-minute limit after this request."""

    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset_s),
                "RateLimit-Policy": f"{self.limit};w={WINDOW_S}"}


class RequestRate:
    """A moving-window limiter per tenant in Redis, through the API's own Redis client (its
    connection pool, so its short timeouts apply)."""

    def __init__(self, client: redis.Redis) -> None:
        storage = RedisStorage("redis://", connection_pool=client.connection_pool,
                               key_prefix=keys.RPM_PREFIX)
        self.limiter = MovingWindowRateLimiter(storage)
        self._off_until = 0.0
        self._lock = threading.Lock()

    def hit(self, tenant_id: str, rpm: int) -> RateState:
        """Count one request; raises LimitExceeded (``rate_limited``) when the minute is full."""
        item = RateLimitItemPerMinute(rpm)
        allowed = self.limiter.hit(item, tenant_id)
        stats = self.limiter.get_window_stats(item, tenant_id)
        reset_s = max(1, math.ceil(stats.reset_time - time.time()))
        state = RateState(rpm, max(0, stats.remaining), min(WINDOW_S, reset_s))
        if allowed:
            return state
        refused = LimitExceeded("rate_limited", (
            f"tenant limit rpm: at most {rpm} requests per minute; this minute's are used up. "
            f"The limit resets as the oldest of them leaves the one-minute window: retry in "
            f"{state.reset_s} s"), state.reset_s)
        refused.headers = state.headers()
        raise refused

    def check(self, request: Request, tenant_id: str, rpm: int) -> None:
        """Count the request of a tenant; its RateLimit fields go on the answer."""
        if rpm <= 0 or time.monotonic() < self._off_until:
            return
        try:
            state = self.hit(tenant_id, rpm)
        except REDIS_ERRORS as exc:
            with self._lock:
                self._off_until = time.monotonic() + SKIP_AFTER_FAILURE_S
            outage_warnings.failed("redis", exc, f"{request.method} {request.url.path}",
                                   "serving without the per-tenant request limit")
            return
        except LimitExceeded as exc:
            request.state.imgq_rate = RateState(rpm, 0, exc.retry_after_s)
            raise
        request.state.imgq_rate = state


class RateLimitHeaders:
    """Puts the request's RateLimit fields on its answer, whatever the route returned (a model,
    a JSONResponse, a stream, an error)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_fields(message: Message) -> None:
            rate = state.get(STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(rate, RateState):
                headers = MutableHeaders(scope=message)
                for name, value in rate.headers().items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_fields)


RATE_FIELDS = {
    "RateLimit-Limit": "Requests per minute this tenant may send.",
    "RateLimit-Remaining": "Requests left in the current minute.",
    "RateLimit-Reset": "Seconds until the oldest counted request leaves the one-minute window.",
    "RateLimit-Policy": "The limit and its window: `600;w=60`.",
}
TOO_MANY = ("Over a tenant limit: `rate_limited` (requests per minute), `quota_exceeded` "
            "(jobs waiting or running at once) or `budget_exceeded` (spend per day or month); "
            "retry after the `Retry-After` header's seconds")


def _document(app: FastAPI) -> None:
    """Every tenant operation (Bearer API key, not /v1/admin) documents its 429 and the
    RateLimit fields of its answers in the OpenAPI schema."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        fields = {name: {"description": text, "schema": {"type": "integer"}}
                  for name, text in RATE_FIELDS.items()}
        fields["RateLimit-Policy"]["schema"] = {"type": "string"}
        for path, operations in schema.get("paths", {}).items():
            if path.startswith("/v1/admin"):
                continue
            for operation in operations.values():
                if not isinstance(operation, dict) or not operation.get("security"):
                    continue
                responses = operation.setdefault("responses", {})
                for code, answer in responses.items():
                    if code.startswith("2"):
                        answer.setdefault("headers", {}).update(fields)
                responses.setdefault("429", {
                    "description": TOO_MANY,
                    "headers": {"Retry-After": {"description": "Seconds to wait.",
                                                "schema": {"type": "integer"}}, **fields},
                    "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/ApiErrorResponse"}}}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    app.add_middleware(RateLimitHeaders)
    _document(app)

    @app.exception_handler(LimitExceeded)
    async def _limited(_: Request, exc: LimitExceeded) -> JSONResponse:
        return error_response(429, exc.kind, exc.message,
                              headers={"Retry-After": str(exc.retry_after_s), **exc.headers})
