"""A generic OpenAI-compatible aggregator (one-api/new-api family):
``POST /aggregator/v1/images/generations`` (providers.md section 6).

Requests and successes are OpenAI's. Errors carry ``(request id: …)`` at the end of
``error.message``; upstream failures arrive as the upstream's JSON body *stringified* inside that
message (here Gemini's), so adapters must classify by the inner status. ``overloaded:no_channel``
gives new-api's own 503 ``model_not_found``.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.outcomes import Kind
from simulator.state import Decision, SimState
from simulator.vendors import gemini
from simulator.vendors.common import (
    COMMON_KINDS,
    JSON,
    bearer_token,
    garbage_html_response,
    json_response,
    read_json,
    request_id,
    run_call,
    truncated_json_response,
)
from simulator.vendors.openai_images import InvalidRequest, parse_request, success_body

STATUS_PHRASES = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
                  503: "Service Unavailable", 504: "Gateway Timeout"}
UPSTREAM_KINDS = (Kind.OVERLOADED, Kind.SERVER_ERROR, Kind.DEADLINE, Kind.QUOTA,
                  Kind.INVALID_REQUEST)


def own_error(message: str, code: str, rid: str, type_: str = "new_api_error") -> JSON:
    return {"error": {"message": f"{message} (request id: {rid})", "type": type_, "param": "",
                      "code": code}}


def upstream_error(upstream: JSON, rid: str) -> tuple[int, JSON]:
    """The upstream body stringified in the outer envelope, as new-api relays it."""
    status = int(upstream["error"]["code"])
    message = f"{json.dumps(upstream, ensure_ascii=False)} (request id: {rid})"
    return status, {"error": {"message": message, "type": "upstream_error", "param": "",
                              "code": status, "status": STATUS_PHRASES.get(status, "Error")}}


def error_for(kind: Kind, model: str, detail: str | None, rid: str) -> tuple[int, JSON]:
    if kind is Kind.OVERLOADED and detail == "no_channel":
        return 503, own_error(f"No available channel for model {model} under group default",
                              "model_not_found", rid)
    if kind in UPSTREAM_KINDS:
        return upstream_error(gemini.error_for(kind, model, detail), rid)
    if kind is Kind.AUTH:
        return 401, own_error("Invalid token", "invalid_api_key", rid)
    if kind is Kind.BILLING:
        return 403, own_error("User quota is not enough", "insufficient_user_quota", rid)
    return 400, own_error("Your request was rejected by the safety system.",
                          "content_policy_violation", rid, "upstream_error")


def routes(state: SimState) -> list[Route]:
    async def generate(request: Request) -> Response:
        rid = request_id()
        headers = {"x-request-id": rid}
        body = await read_json(request)
        invalid: InvalidRequest | None = None
        req = None
        try:
            req = parse_request(body, default_response_format="b64_json", passthrough=True)
        except InvalidRequest as exc:
            invalid = exc
        model = str((body or {}).get("model") or "")
        prompt = str((body or {}).get("prompt") or "")
        forced = (Kind.AUTH if bearer_token(request) is None else
                  Kind.INVALID_REQUEST if invalid else None)

        async def respond(decision: Decision) -> Response:
            kind = decision.kind
            if forced is Kind.AUTH:
                return json_response(own_error("No token provided", "", rid), 401, headers)
            if invalid is not None:
                return json_response(own_error(invalid.message, invalid.code or "invalid_request",
                                               rid), 400, headers)
            assert req is not None
            if kind is Kind.GARBAGE_HTML:
                return garbage_html_response(headers)
            if kind in (Kind.OK, Kind.NO_IMAGE, Kind.TRUNCATED_JSON, Kind.BAD_BASE64):
                count = 0 if kind is Kind.NO_IMAGE else req.n
                answer = await success_body(state, request, req, corrupt=kind is Kind.BAD_BASE64,
                                            images=count, files_prefix="aggregator")
                if kind is Kind.TRUNCATED_JSON:
                    return truncated_json_response(answer, headers)
                return json_response(answer, 200, headers)
            status, error = error_for(kind, model, decision.detail, rid)
            return json_response(error, status, headers)

        return await run_call(state, request, vendor="aggregator", model=model, prompt=prompt,
                              supported=COMMON_KINDS, respond=respond, forced=forced)

    return [Route("/aggregator/v1/images/generations", generate, methods=["POST"])]
