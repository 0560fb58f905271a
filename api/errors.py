"""Domain errors become HTTP status codes here, in one place, with one body shape:

    {"error": {"type": "...", "message": "...", "details": [{"field": "...", "message": "..."}]}}
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler.errors import Conflict, InvalidJob, NotFound


def error_response(status: int, type_: str, message: str,
                   details: list[dict[str, Any]] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"type": type_, "message": message, "details": details or []}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


def install(app: FastAPI) -> None:
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

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, "conflict", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed"}.get(exc.status_code, "error")
        return error_response(exc.status_code, type_, str(exc.detail),
                              headers=getattr(exc, "headers", None))
