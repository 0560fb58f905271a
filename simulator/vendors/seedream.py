"""Seedream on Volcengine Ark / BytePlus ModelArk: ``POST /ark/api/v3/images/generations``
(providers.md section 4). ``partial`` answers a multi-image request with one failed item."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.images import ImageSpec
from simulator.outcomes import Kind
from simulator.state import Decision, SimState
from simulator.vendors.common import (
    JSON,
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

PRESETS = {"1K": 1024, "2K": 2048, "4K": 4096}
MAX_SIDE = 4096
MAX_IMAGES = 15
TOKENS_PER_2K_IMAGE = 16384
OUTPUT_SENSITIVE = ("OutputImageSensitiveContentDetected",
                    "The request failed because the output image may contain sensitive "
                    "information.")


def error_body(code: str, message: str, type_: str, rid: str, param: str = "") -> JSON:
    return {"error": {"code": code, "message": f"{message} Request id: {rid}", "param": param,
                      "type": type_}}


def _size(raw: object) -> tuple[int, int] | None:
    text = str(raw or "2K")
    if text.upper() in PRESETS:
        side = PRESETS[text.upper()]
        return side, side
    parsed = parse_size(text)
    if parsed is None:
        return None
    width, height = parsed
    if not (64 <= width <= MAX_SIDE and 64 <= height <= MAX_SIDE):
        return None
    return parsed if 1 / 16 <= width / height <= 16 else None


def _count(body: JSON) -> int:
    if body.get("sequential_image_generation") == "auto":
        options = body.get("sequential_image_generation_options") or {}
        wanted = options.get("max_images", 1) if isinstance(options, dict) else 1
    else:
        wanted = body.get("n", 1)
    return max(1, min(MAX_IMAGES, wanted if isinstance(wanted, int) else 1))


def _invalid(
    model: str, prompt: str, size: tuple[int, int] | None, response_format: str,
    output_format: str,
) -> tuple[str, str] | None:
    """(error code, parameter) of the first bad parameter, or None."""
    if not model or not prompt:
        return "MissingParameter", "model" if not model else "prompt"
    if size is None:
        return "InvalidParameter", "size"
    if response_format not in ("url", "b64_json"):
        return "InvalidParameter", "response_format"
    if output_format not in ("png", "jpeg"):
        return "InvalidParameter", "output_format"
    return None


def _error(kind: Kind, model: str, rid: str) -> tuple[int, JSON]:
    table: dict[Kind, tuple[int, JSON]] = {
        Kind.OVERLOADED: (429, error_body(
            "ServerOverloaded", f"The service: {model} is currently unable to handle additional "
            "requests due to server overload.", "TooManyRequests", rid)),
        Kind.SERVER_ERROR: (500, error_body(
            "InternalServiceError", "The service encountered an unexpected internal error.",
            "InternalServerError", rid)),
        Kind.DEADLINE: (502, error_body(
            "InternalServiceError", "The service timed out while waiting for the model.",
            "InternalServerError", rid)),
        Kind.QUOTA: (429, error_body(
            "RateLimitExceeded.EndpointRPMExceeded", "The request has exceeded the rate limit of "
            "requests per minute (RPM) for this endpoint. Please try again later.",
            "TooManyRequests", rid)),
        Kind.AUTH: (401, error_body(
            "AuthenticationError", "The API key or AK/SK in the request is missing or invalid.",
            "Unauthorized", rid)),
        Kind.BILLING: (403, error_body(
            "AccountOverdueError", "The request failed because your account has an overdue "
            "balance.", "Forbidden", rid)),
        Kind.INVALID_REQUEST: (400, error_body(
            "InvalidParameter", "The parameter `size` specified in the request is not valid.",
            "BadRequest", rid, "size")),
        Kind.CONTENT_POLICY: (400, error_body(*OUTPUT_SENSITIVE, "BadRequest", rid)),
        Kind.PROMPT_BLOCKED: (400, error_body(
            "InputTextSensitiveContentDetected", "The request failed because the input text may "
            "contain sensitive information.", "BadRequest", rid)),
    }
    return table[kind]


SUPPORTED = frozenset(Kind)


def routes(state: SimState) -> list[Route]:
    async def generate(request: Request) -> Response:
        rid = request_id()
        headers = {"X-Request-Id": rid}
        body = await read_json(request) or {}
        model = str(body.get("model") or "")
        prompt = str(body.get("prompt") or "")
        size = _size(body.get("size"))
        output_format = str(body.get("output_format") or "png")
        response_format = str(body.get("response_format") or "url")
        invalid = _invalid(model, prompt, size, response_format, output_format)
        token = bearer_token(request)
        forced = Kind.AUTH if token is None else Kind.INVALID_REQUEST if invalid else None

        async def item(spec: ImageSpec) -> JSON:
            size_text = f"{spec.width}x{spec.height}"
            if response_format == "b64_json":
                return {"b64_json": await image_b64(spec), "size": size_text}
            file_id = state.files.put(spec)
            url = f"{base_url(request)}/ark/files/{file_id}.{output_format}?X-Tos-Expires=86400"
            return {"url": url, "size": size_text}

        async def respond(decision: Decision) -> Response:
            kind = decision.kind
            if forced is Kind.AUTH:
                status, error = _error(Kind.AUTH, model, rid)
                return json_response(error, status, headers)
            if invalid is not None:
                code, param = invalid
                qualifier = "missing" if code == "MissingParameter" else "not valid"
                message = f"The parameter `{param}` specified in the request is {qualifier}."
                error = error_body(code, message, "BadRequest", rid, param)
                return json_response(error, 400, headers)
            assert size is not None
            if kind is Kind.GARBAGE_HTML:
                return garbage_html_response(headers)
            if kind not in (Kind.OK, Kind.NO_IMAGE, Kind.PARTIAL, Kind.TRUNCATED_JSON,
                            Kind.BAD_BASE64):
                status, error = _error(kind, model, rid)
                return json_response(error, status, headers)
            count = 0 if kind is Kind.NO_IMAGE else _count(body)
            if kind is Kind.PARTIAL:
                count = max(count, 2)
            spec = ImageSpec(prompt, size[0], size[1], output_format,
                             corrupt=kind is Kind.BAD_BASE64)
            data = [await item(spec) for _ in range(count)]
            if kind is Kind.PARTIAL:
                code, message = OUTPUT_SENSITIVE
                data[-1] = {"error": {"code": code, "message": message}}
            generated = sum(1 for d in data if "error" not in d)
            tokens = generated * TOKENS_PER_2K_IMAGE * size[0] * size[1] // 2048**2
            answer = {"model": model, "created": int(time.time()), "data": data,
                      "usage": {"generated_images": generated, "output_tokens": tokens,
                                "total_tokens": tokens}}
            if kind is Kind.TRUNCATED_JSON:
                return truncated_json_response(answer, headers)
            return json_response(answer, 200, headers)

        return await run_call(state, request, vendor="seedream", model=model, prompt=prompt,
                              supported=SUPPORTED, respond=respond, forced=forced)

    return [Route("/ark/api/v3/images/generations", generate, methods=["POST"])]

