"""Domain errors become HTTP status codes here, in one place, with one body shape:

    {"error": {"type": "...", "message": "...", "details": [{"field": "...", "message": "..."}]}}

The database or Redis unreachable (``scheduler.outages.dependency_of``) is a 503 of type
``unavailable`` with a ``Retry-After`` header, from every endpoint; anything else unexpected is a
500 of type ``internal_error``, never a plain-text page: its traceback is logged with the request
id, which the body carries as ``error.request_id`` (every response has it as ``X-Request-Id``,
``api/request_ids.py``). A stream already under way cannot change its status: it ends with
``stream_error``'s body instead. A message may echo what the client sent: the body is written so
that even a lone surrogate in it comes out as valid JSON (a ``\\uXXXX`` escape).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_ids import HEADER, RequestIdMiddleware, new_request_id, request_id_of
from scheduler.errors import Conflict, InvalidJob, NotFound
from scheduler.job_spec import InvalidFields
from scheduler.outages import DATABASE_ERRORS, DEPENDENCY_ERRORS, REDIS_ERRORS, dependency_of

log = logging.getLogger("api")
DEPENDENCY_NAMES = {"database": "the database", "redis": "Redis"}
INTERNAL_MESSAGE = "an unexpected error occurred on the server; it has been logged"


def error_body(type_: str, message: str,
               details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, "details": details or []}}


class ErrorJSONResponse(JSONResponse):
    """JSON that cannot fail to encode: a lone surrogate an error message echoes is written as
    its ``\\uXXXX`` escape instead of raising UnicodeEncodeError."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False,
                          separators=(",", ":")).encode("utf-8", "backslashreplace")


def error_response(status: int, type_: str, message: str,
                   details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return ErrorJSONResponse(error_body(type_, message, details), status_code=status,
                             headers=headers)


def internal_error_response(request: Request, exc: BaseException,
                            retry_after_s: int) -> JSONResponse:
    """The answer to an unexpected exception: a 503 if it is an outage, else a 500 whose body and
    ``X-Request-Id`` carry the id its traceback is logged with."""
    dependency = dependency_of(exc)
    if dependency is not None:  # an outage raised outside the routes (a middleware, say)
        return unavailable_response(dependency, retry_after_s)
    request_id = request_id_of(request) or new_request_id()
    log.error("request %s (%s %s) failed: %s", request_id, request.method, request.url.path,
              describe(exc), exc_info=exc)
    body = error_body("internal_error", f"{INTERNAL_MESSAGE} (request id {request_id})")
    body["error"]["request_id"] = request_id
    return ErrorJSONResponse(body, status_code=500, headers={HEADER: request_id})


def unavailable_message(dependency: str, retry_after_s: int) -> str:
    return f"{DEPENDENCY_NAMES.get(dependency, dependency)} is unreachable; retry in {retry_after_s} s"


def describe(error: BaseException) -> str:
    """``Class: first line of the message`` (SQLAlchemy appends a background link we drop)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class _OutageWarnings:
    """One warning per dependency per ``every_s`` while it fails, however many requests fail."""

    def __init__(self, every_s: float = 30.0) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def failed(self, dependency: str, error: BaseException, where: str,
               outcome: str = "answering 503 with Retry-After") -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(dependency, float("-inf")) < self.every_s:
                self._suppressed[dependency] = self._suppressed.get(dependency, 0) + 1
                return
            self._last[dependency] = now
            suppressed = self._suppressed.pop(dependency, 0)
        more = f" ({suppressed} more since the last warning)" if suppressed else ""
        # Not a plain connection failure (a Redis error reply, say): keep the traceback too.
        plain = isinstance(error, DATABASE_ERRORS + REDIS_ERRORS)
        log.warning("%s unreachable (%s) in %s: %s%s", dependency, describe(error), where,
                    outcome, more, exc_info=None if plain else error)


outage_warnings = _OutageWarnings()


def unavailable_response(dependency: str, retry_after_s: int) -> JSONResponse:
    return error_response(503, "unavailable", unavailable_message(dependency, retry_after_s),
                          headers={"Retry-After": str(retry_after_s)})


def stream_error(error: BaseException, retry_after_s: int, where: str) -> dict[str, Any]:
    """The body a stream ends with when ``error`` cuts it short (the status line is long sent):
    ``unavailable`` for a dependency outage (a throttled warning), else ``internal_error`` (the
    traceback logged)."""
    dependency = dependency_of(error)
    if dependency is not None:
        outage_warnings.failed(dependency, error, where, "ending the stream with an error")
        return error_body("unavailable", unavailable_message(dependency, retry_after_s))
    log.error("%s: the stream failed", where, exc_info=error)
    return error_body("internal_error", INTERNAL_MESSAGE)


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def allowed_methods(request: Request) -> list[str]:
    """Every method the schema documents for the request's path: Starlette's own 405 names only
    the route it tried, and FastAPI makes one route per method."""
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {m.upper() for m in operations}
    return sorted(methods)


def install(app: FastAPI, retry_after_s: int = 5) -> None:
    def _where(request: Request) -> str:
        return f"{request.method} {request.url.path}"

    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        """Anything else. RequestIdMiddleware calls this for the app and the routes; an error
        outside it reaches ServerErrorMiddleware, which calls this too, then re-raises."""
        return internal_error_response(request, exc, retry_after_s)

    async def _unreachable(request: Request, exc: Exception) -> JSONResponse:
        dependency = dependency_of(exc)
        if dependency is None:  # pragma: no cover - every registered class has a dependency
            return await _internal(request, exc)
        outage_warnings.failed(dependency, exc, _where(request))
        return unavailable_response(dependency, retry_after_s)

    app.add_exception_handler(Exception, _internal)
    app.add_middleware(RequestIdMiddleware, on_error=_internal)
    # Handlers for these classes run in ExceptionMiddleware, around every route, its
    # dependencies (the tenant lookup reads the database) and sync route functions alike.
    for error_class in dict.fromkeys(DEPENDENCY_ERRORS):
        if issubclass(error_class, Exception):
            app.add_exception_handler(error_class, _unreachable)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next(e for e in errors if e.get("type") == "json_invalid").get("ctx", {})
            return error_response(400, "invalid_json",
                                  f"request body is not valid JSON: {ctx.get('error', 'parse error')}")
        details = []
        for e in errors:
            message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                message = "unknown field"
            details.append({"field": _field(e.get("loc", ())), "message": message})
        summary = "; ".join(f"{d['field']}: {d['message']}" if d["field"] else str(d["message"])
                            for d in details)
        return error_response(422, "invalid_request", summary, details)

    @app.exception_handler(InvalidJob)
    async def _invalid(_: Request, exc: InvalidJob) -> JSONResponse:
        return error_response(422, "invalid_request", f"{exc.field}: {exc.message}",
                              [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(InvalidFields)
    async def _invalid_fields(_: Request, exc: InvalidFields) -> JSONResponse:
        return error_response(422, "invalid_request", str(exc),
                              [{"field": f, "message": m} for f, m in exc.problems])

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 503: "unavailable"}.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 503:
            headers.setdefault("Retry-After", str(retry_after_s))
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return error_response(exc.status_code, type_, str(exc.detail), headers=headers or None)
