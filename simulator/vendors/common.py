"""What every vendor format shares: timing a call, broken answers, JSON and image helpers."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from simulator.images import ImageSpec, render
from simulator.outcomes import HANG_S, Kind
from simulator.state import Call, Decision, SimState

JSON = dict[str, Any]
Respond = Callable[[Decision], Awaitable[Response]]

# Every vendor format can produce these; vendors add their own special kinds (e.g. ``partial``).
COMMON_KINDS = frozenset(Kind) - {Kind.PARTIAL}

GARBAGE_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_DISCONNECT_POLL_S = 0.2
# Pixel size at "1K" per aspect ratio (Gemini and Recraft V4 share it); 2K doubles, 4K quadruples.
SIZES_1K = {
    "1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184),
    "4:3": (1184, 864), "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344),
    "16:9": (1344, 768), "21:9": (1536, 672),
}


def request_id() -> str:
    return uuid.uuid4().hex


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def garbage_html_response(headers: dict[str, str] | None = None) -> Response:
    return Response(GARBAGE_HTML, status_code=502, media_type="text/html", headers=headers)


def truncated_json_response(body: Any, headers: dict[str, str] | None = None) -> Response:
    """A 200 whose JSON body stops halfway, as when a proxy cuts the connection short."""
    text = json.dumps(body, ensure_ascii=False)
    return Response(
        text[: max(1, len(text) // 2)], media_type="application/json", headers=headers
    )


async def read_json(request: Request) -> JSON | None:
    """The request body as a JSON object, or None when it is not one."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


async def image_bytes(spec: ImageSpec) -> bytes:
    """Rendered off the event loop so hundreds of concurrent calls stay concurrent."""
    return await asyncio.to_thread(render, spec)


async def image_b64(spec: ImageSpec) -> str:
    return base64.b64encode(await image_bytes(spec)).decode("ascii")


def parse_size(text: str) -> tuple[int, int] | None:
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        return None
    return int(width), int(height)


async def _client_left_within(request: Request, seconds: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if await request.is_disconnected():
            return True
        await asyncio.sleep(min(_DISCONNECT_POLL_S, max(0.0, deadline - loop.time())))
    return False


async def serve_call(call: Call, request: Request, respond: Respond) -> Response:
    """Answer after the call's latency, and close it in the ledger. The answer (an image, say) is
    made while the latency runs, as a vendor's latency includes making the image: the time the
    client sees is the profile's, not that plus this machine's rendering time. ``hang`` waits for
    the client to give up (and answers like ``deadline`` should it ever wait the full 600 s)."""
    decision = call.decision
    status: int | None = None
    answer: asyncio.Future[Response] | None = None
    try:
        if decision.kind is Kind.HANG:
            if await _client_left_within(request, HANG_S):
                return Response(status_code=499)
            answer = asyncio.ensure_future(respond(Decision(Kind.DEADLINE, None,
                                                            decision.latency_s)))
        else:
            answer = asyncio.ensure_future(respond(decision))
            await asyncio.sleep(decision.latency_s)
        response = await answer
        status = response.status_code
        return response
    finally:
        if answer is not None and not answer.done():
            answer.cancel()
        call.finish(status)


async def run_call(
    state: SimState,
    request: Request,
    *,
    vendor: str,
    model: str,
    prompt: str,
    supported: frozenset[Kind],
    respond: Respond,
    forced: Kind | None = None,
) -> Response:
    """Decide the outcome, log the call, wait its latency and answer through ``respond``."""
    decision = state.decide(model, prompt, supported, forced)
    return await serve_call(state.start_call(vendor, model, prompt, decision), request, respond)
