"""The body of ``POST /v1/jobs``, read and parsed here rather than by FastAPI, so that it is
checked the way a batch line is (``scheduler.job_spec``): the JSON text itself (UTF-8, a key named
twice in one object, ``NaN``, nesting too deep to parse) and then the one job model, with the
limits of the settings. The body is read with a byte counter and refused past
``JOB_BODY_MAX_BYTES`` before it is all read.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from api.deps import ServicesDep, TenantDep
from api.errors import error_response
from scheduler.errors import QueueError
from scheduler.job_spec import (
    InvalidFields,
    JobCreate,
    JobLimits,
    JsonProblem,
    loads_strict,
    validate_job,
)

JOB_BODY_MAX_BYTES = 1 << 20  # a prompt, 16 KiB of metadata and a URL fit many times over
JOB_BODY_OPENAPI: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": JobCreate.model_json_schema()}}}}


class InvalidJsonBody(QueueError):
    """The body is not JSON at all (the 400 of ``invalid_json``)."""


class RequestTooLarge(QueueError):
    def __init__(self, limit_bytes: int) -> None:
        super().__init__(f"the request body is larger than {limit_bytes} bytes")


class UnsupportedMediaType(QueueError):
    pass


async def read_capped(request: Request, limit_bytes: int) -> bytes:
    """The whole body, refused (RequestTooLarge) as soon as it passes ``limit_bytes``: at once
    when its Content-Length says so, else while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit_bytes:
        raise RequestTooLarge(limit_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise RequestTooLarge(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes, what: str = "the job") -> dict[str, Any]:
    """A request body as a JSON object: InvalidJsonBody if it is not JSON, InvalidFields if it is
    JSON we refuse (a key twice, NaN, too deep) or not an object."""
    if not raw.strip():
        raise InvalidFields([(None, f"the request body is empty: send {what} as a JSON object")])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJsonBody(f"request body is not valid JSON: not valid UTF-8 (byte "
                              f"0x{raw[exc.start]:02x} at position {exc.start})") from None
    try:
        value = loads_strict(text)
    except json.JSONDecodeError as exc:
        raise InvalidJsonBody(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}") from None
    except JsonProblem as exc:
        raise InvalidFields([(exc.field, exc.message)]) from None
    if not isinstance(value, dict):
        raise InvalidFields([(None, f"the request body must be a JSON object holding {what}, "
                                    f"got {type(value).__name__}")])
    return value


async def job_create(request: Request, svc: ServicesDep, _: TenantDep) -> JobCreate:
    """The validated body of ``POST /v1/jobs`` (after the API key: a 401 comes first)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json" and not content_type.endswith("+json"):
        raise UnsupportedMediaType(f"send the job as application/json, not {content_type[:60]!r}")
    raw = await read_capped(request, JOB_BODY_MAX_BYTES)
    return validate_job(parse_json_object(raw), JobLimits.from_settings(svc.settings))


JobBody = Annotated[JobCreate, Depends(job_create)]


def install(app: FastAPI) -> None:
    """The HTTP form of the body errors (same body shape as api/errors.py)."""

    @app.exception_handler(InvalidJsonBody)
    async def _invalid_json(_: Request, exc: InvalidJsonBody) -> JSONResponse:
        return error_response(400, "invalid_json", str(exc))

    @app.exception_handler(RequestTooLarge)
    async def _too_large(_: Request, exc: RequestTooLarge) -> JSONResponse:
        return error_response(413, "request_too_large", str(exc))

    @app.exception_handler(UnsupportedMediaType)
    async def _media_type(_: Request, exc: UnsupportedMediaType) -> JSONResponse:
        return error_response(415, "unsupported_media_type", str(exc),
                              [{"field": "Content-Type", "message": str(exc)}])
