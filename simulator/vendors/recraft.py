"""Recraft ``POST /recraft/v1/images/generations`` (providers.md section 5). Vector models
(``*_vector``, or the V3 styles ``vector_illustration``/``icon``) answer with a real SVG document.
Recraft's error schema is unconfirmed; the simulator answers ``{"code", "message"}``."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.images import ImageSpec
from simulator.outcomes import Kind
from simulator.state import Decision, SimState
from simulator.vendors.common import (
    COMMON_KINDS,
    JSON,
    SIZES_1K,
    base_url,
    bearer_token,
    garbage_html_response,
    image_b64,
    json_response,
    parse_size,
    read_json,
    request_id,
    run_call,
    truncated_json_response,
)

VECTOR_STYLES = {"vector_illustration", "icon"}
RETRY_AFTER_S = 7
ERRORS: dict[Kind, tuple[int, str, str]] = {
    Kind.OVERLOADED: (503, "service_unavailable", "Service is temporarily overloaded, please "
                                                  "retry later"),
    Kind.SERVER_ERROR: (500, "internal_error", "Internal server error"),
    Kind.DEADLINE: (502, "bad_gateway", "Upstream generation timed out"),
    Kind.QUOTA: (429, "too_many_requests", "Rate limit exceeded, please retry later"),
    Kind.AUTH: (401, "unauthorized", "Invalid API token"),
    Kind.BILLING: (402, "not_enough_credits", "Not enough credits to perform the operation"),
    Kind.INVALID_REQUEST: (400, "invalid_parameter", "Invalid value of parameter 'size'"),
    Kind.CONTENT_POLICY: (400, "inappropriate_content", "The generated image was flagged by "
                                                       "content moderation"),
    Kind.PROMPT_BLOCKED: (400, "inappropriate_prompt", "The prompt was flagged by content "
                                                       "moderation"),
}


def is_vector(model: str, style: str | None) -> bool:
    return model.endswith("_vector") or style in VECTOR_STYLES


def credits_per_image(model: str, vector: bool) -> int:
    if "_pro" in model:
        return 300 if vector else 250
    return 80 if vector else 40


def _size(model: str, raw: object) -> tuple[int, int] | None:
    scale = 2 if "_pro" in model else 1
    if raw is None:
        return 1024 * scale, 1024 * scale
    text = str(raw)
    if text in SIZES_1K:
        width, height = SIZES_1K[text]
        return width * scale, height * scale
    parsed = parse_size(text)
    if parsed and all(256 <= side <= 4096 for side in parsed):
        return parsed
    return None


def routes(state: SimState) -> list[Route]:
    async def generate(request: Request) -> Response:
        rid = request_id()
        headers = {"x-request-id": rid}
        body = await read_json(request) or {}
        model = str(body.get("model") or "recraftv4_1")
        prompt = str(body.get("prompt") or "")
        style = body.get("style")
        size = _size(model, body.get("size"))
        response_format = str(body.get("response_format") or "url")
        invalid = (
            "Missing required parameter 'prompt'" if not prompt else
            f"Invalid value of parameter 'size': {body.get('size')!r}" if size is None else
            "Invalid value of parameter 'response_format'"
            if response_format not in ("url", "b64_json") else None
        )
        forced = (Kind.AUTH if bearer_token(request) is None else
                  Kind.INVALID_REQUEST if invalid else None)

        async def respond(decision: Decision) -> Response:
            kind = decision.kind
            if invalid is not None and forced is Kind.INVALID_REQUEST:
                return json_response({"code": "invalid_parameter", "message": invalid}, 400,
                                     headers)
            if kind is Kind.GARBAGE_HTML:
                return garbage_html_response(headers)
            if kind in ERRORS:
                status, code, message = ERRORS[kind]
                extra = {"Retry-After": str(RETRY_AFTER_S)} if kind is Kind.QUOTA else {}
                return json_response({"code": code, "message": message}, status,
                                     {**headers, **extra})
            assert size is not None
            vector = is_vector(model, style if isinstance(style, str) else None)
            spec = ImageSpec(prompt, size[0], size[1], "svg" if vector else "png",
                             corrupt=kind is Kind.BAD_BASE64)
            wanted = body.get("n", 1)
            n = wanted if isinstance(wanted, int) else 1
            count = 0 if kind is Kind.NO_IMAGE else max(1, min(6, n))
            data: list[JSON] = []
            for _ in range(count):
                file_id = state.files.put(spec)
                item: JSON = {"image_id": file_id}
                if response_format == "b64_json":
                    item["b64_json"] = await image_b64(spec)
                else:
                    item["url"] = f"{base_url(request)}/recraft/files/{file_id}." \
                                  f"{spec.output_format}"
                data.append(item)
            answer = {"created": int(time.time()),
                      "credits": credits_per_image(model, vector) * count, "data": data}
            if kind is Kind.TRUNCATED_JSON:
                return truncated_json_response(answer, headers)
            return json_response(answer, 200, headers)

        return await run_call(state, request, vendor="recraft", model=model, prompt=prompt,
                              supported=COMMON_KINDS, respond=respond, forced=forced)

    return [Route("/recraft/v1/images/generations", generate, methods=["POST"])]
