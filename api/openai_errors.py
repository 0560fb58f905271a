"""Errors of the OpenAI-compatible gateway, in OpenAI's shape and with the statuses its SDKs map
to their exceptions:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "size", "code": "..."}}

    400 invalid request, malformed JSON, content policy   BadRequestError
    401 missing or invalid API key                        AuthenticationError
    403 a signed image link tampered with or expired      PermissionDeniedError
    404 unknown model, image or job                       NotFoundError
    409 Idempotency-Key reused with another request       ConflictError
    413 body over 1 MiB                                   APIStatusError
    429 a tenant limit, with Retry-After                  RateLimitError
    503 no model served in time, or the database or Redis is unreachable, with Retry-After

Only the gateway's routes answer in this shape (``OpenAIRoute``); every other route keeps the
API's own (``api/errors.py``). Whatever the handler or its dependencies raise (the tenant
lookup, the request rate, a validation error of a path or header parameter) is translated here,
so a bad request is never FastAPI's 422 and an outage never a 500. An unexpected error is a 500
in this shape whose traceback is logged under the request id it carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.bodies import InvalidJsonBody, RequestTooLarge
from api.errors import (
    ErrorJSONResponse,
    describe,
    outage_warnings,
    unavailable_message,
)
from api.image_links import LinkRefused
from api.openai_schemas import OpenAIErrorResponse
from api.request_ids import HEADER, new_request_id, request_id_of
from scheduler.errors import Conflict, InvalidJob, NotFound
from scheduler.job_spec import InvalidFields
from scheduler.outages import dependency_of
from scheduler.tenants.quotas import LimitExceeded

log = logging.getLogger("api")
INVALID = "invalid_request_error"
TYPE_OF_STATUS = {400: INVALID, 401: "authentication_error", 403: "permission_error",
                  404: INVALID, 405: INVALID, 409: INVALID, 413: INVALID,
                  429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class GatewayError(Exception):
    """An answer of the gateway other than its images: a status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, type_: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or TYPE_OF_STATUS.get(status, INVALID)
        self.headers = dict(headers or {})


def error_response(error: GatewayError) -> JSONResponse:
    body = {"error": {"message": error.message, "type": error.type, "param": error.param,
                      "code": error.code}}
    return ErrorJSONResponse(body, status_code=error.status, headers=error.headers or None)


def _validation_error(exc: RequestValidationError) -> GatewayError:
    """A path, query or header parameter FastAPI refused (the body is read by the route)."""
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("path", "query", "header", "body")]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return GatewayError(400, f"Invalid value for '{param}': {message}." if param else message,
                        code="invalid_value", param=param)


def translate(request: Request, exc: Exception, retry_after_s: int) -> GatewayError:
    """The gateway's answer to what a handler (or a dependency) raised."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, LinkRefused):
        return GatewayError(403, exc.message, code=exc.code)
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, InvalidJsonBody):
        return GatewayError(400, str(exc), code="invalid_json")
    if isinstance(exc, InvalidFields):
        field, message = exc.problems[0] if exc.problems else (None, str(exc))
        return GatewayError(400, message, code="invalid_value", param=field)
    if isinstance(exc, InvalidJob):
        return GatewayError(400, exc.message, code="invalid_value", param=exc.field)
    if isinstance(exc, RequestTooLarge):
        return GatewayError(413, str(exc), code="request_too_large")
    if isinstance(exc, LimitExceeded):
        headers = {"Retry-After": str(exc.retry_after_s), **exc.headers}
        if exc.kind == "budget_exceeded":
            return GatewayError(429, exc.message, code=exc.kind, type_="insufficient_quota",
                                headers=headers)
        return GatewayError(429, exc.message, code=exc.kind, headers=headers)
    if isinstance(exc, NotFound):
        return GatewayError(404, str(exc), code="not_found")
    if isinstance(exc, Conflict):
        return GatewayError(409, str(exc), code="conflict")
    if isinstance(exc, StarletteHTTPException):
        code = {401: "invalid_api_key", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed"}.get(exc.status_code)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 503:
            headers.setdefault("Retry-After", str(retry_after_s))
        return GatewayError(exc.status_code, str(exc.detail), code=code, headers=headers)
    dependency = dependency_of(exc)
    if dependency is not None:
        outage_warnings.failed(dependency, exc, f"{request.method} {request.url.path}")
        return GatewayError(503, unavailable_message(dependency, retry_after_s),
                            code="unavailable", headers={"Retry-After": str(retry_after_s)})
    request_id = request_id_of(request) or new_request_id()
    log.error("request %s (%s %s) failed: %s", request_id, request.method, request.url.path,
              describe(exc), exc_info=exc)
    return GatewayError(500, f"an unexpected error occurred on the server; it has been logged "
                             f"(request id {request_id})", code="internal_error",
                        headers={HEADER: request_id})


class OpenAIRoute(APIRoute):
    """A route that answers every error in OpenAI's shape (``translate``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # noqa: BLE001 - every error becomes OpenAI's shape
                retry_after_s = request.app.state.services.settings.retry_after_s
                return error_response(translate(request, exc, retry_after_s))

        return openai_handler


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the given error statuses, all in OpenAI's shape."""
    what = {400: "Invalid request (a parameter, malformed JSON) or refused by the vendor's "
                 "content policy",
            401: "Missing or invalid API key", 403: "The signed link was altered or has expired",
            404: "Unknown model, job or image", 409: "Idempotency-Key reused with another "
                                                      "request, or the job was canceled",
            413: "Body over 1 MiB",
            429: "Over a tenant limit; retry after the `Retry-After` header's seconds",
            503: "No model served the job in time, or the database or Redis is unreachable; "
                 "retry after the `Retry-After` header's seconds"}
    retry = {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}}
    return {status: {"model": OpenAIErrorResponse, "description": what[status],
                     **({"headers": retry} if status in (429, 503) else {})}
            for status in statuses}
