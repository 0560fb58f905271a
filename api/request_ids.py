"""Every response carries an ``X-Request-Id``: the client's own when it sent a sane token, else
one made here. Handlers read it as ``request.state.request_id``; the 500 of an unexpected error
returns it in its body (``error.request_id``) and logs it, so a report can be matched to the log.

The middleware also answers an unexpected exception itself (through ``on_error``, the API's one
error shape) while the response has not started, so the error is logged once, with its id.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-Id"
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+=/-]{0,127}")
log = logging.getLogger("api")


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(request: Request) -> str | None:
    value = request.scope.get("state", {}).get("request_id")
    return value if isinstance(value, str) else None


def accepted_id(sent: str | None) -> str:
    """The client's id if it is a sane token (letters, digits, ``._:@+=/-``, up to 128), else
    a new one: an id goes into logs and headers as is."""
    return sent if sent is not None and SANE_ID.fullmatch(sent) else new_request_id()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp,
                 on_error: Callable[[Request, Exception], Awaitable[Response]]) -> None:
        self.app = app
        self.on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                     if k == HEADER.lower().encode()), None)
        request_id = accepted_id(sent)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # too late for a status: the stream breaks off, logged with the id
                log.error("request %s (%s %s) failed after its response started", request_id,
                          scope.get("method"), scope.get("path"), exc_info=exc)
                raise
            response = await self.on_error(Request(scope, receive), exc)
            await response(scope, receive, send_with_id)
