"""OpenAI Images: ``POST /openai/v1/images/generations`` (providers.md section 2)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.images import ImageSpec
from simulator.outcomes import Kind
from simulator.state import Decision, SimState
from simulator.vendors.common import (
    COMMON_KINDS,
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

GPT_IMAGE_SIZES = {"1024x1024", "1536x1024", "1024x1536"}
DALLE3_SIZES = {"1024x1024", "1792x1024", "1024x1792"}
DALLE2_SIZES = {"256x256", "512x512", "1024x1024"}
OUTPUT_FORMATS = {"png", "jpeg", "webp"}
QUALITY_TOKENS_1024 = {"low": 272, "medium": 1056, "high": 4160}
RETRY_AFTER_S = 7.2


class InvalidRequest(Exception):
    def __init__(self, message: str, param: str | None, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class ImagesRequest:
    model: str
    prompt: str
    n: int
    width: int
    height: int
    output_format: str
    quality: str
    background: str
    response_format: str  # "b64_json" | "url"

    @property
    def is_gpt_image(self) -> bool:
        return self.model.startswith("gpt-image")

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> JSON:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _size(model: str, raw: Any) -> tuple[int, int]:
    text = "auto" if raw in (None, "auto") else str(raw)
    if text == "auto":
        return 1024, 1024
    parsed = parse_size(text)
    if model.startswith("gpt-image-2") and parsed:
        width, height = parsed
        if width % 16 == 0 and height % 16 == 0 and max(width, height) <= 3840:
            return parsed
    allowed = (
        GPT_IMAGE_SIZES if model.startswith("gpt-image")
        else DALLE3_SIZES if model == "dall-e-3"
        else DALLE2_SIZES if model == "dall-e-2"
        else None
    )
    if parsed and (allowed is None or text in allowed):
        return parsed
    shown = ", ".join(f"'{s}'" for s in sorted(allowed or GPT_IMAGE_SIZES))
    raise InvalidRequest(f"Invalid value: '{text}'. Supported values are: {shown} and 'auto'.",
                         "size")


def parse_request(
    body: JSON | None, *, default_response_format: str, passthrough: bool = False
) -> ImagesRequest:
    """Validate like the real endpoint; raises ``InvalidRequest`` with OpenAI's wording.
    ``passthrough`` (aggregators) lets vendor-specific fields through unchecked."""
    if body is None:
        raise InvalidRequest("We could not parse the JSON body of your request. (HINT: This "
                             "likely means you aren't using your HTTP library correctly.)", None,
                             None)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("Missing required parameter: 'prompt'.", "prompt",
                             "missing_required_parameter")
    model = str(body.get("model") or "dall-e-2")
    gpt_image = model.startswith("gpt-image")
    n = body.get("n", 1)
    if not isinstance(n, int) or not 1 <= n <= 10 or (model == "dall-e-3" and n != 1):
        raise InvalidRequest(f"Invalid 'n': {n!r}. Expected a value between 1 and 10.", "n")
    if gpt_image and "response_format" in body and not passthrough:
        raise InvalidRequest("Unknown parameter: 'response_format'.", "response_format",
                             "unknown_parameter")
    output_format = str(body.get("output_format") or "png")
    if output_format not in OUTPUT_FORMATS:
        raise InvalidRequest(f"Invalid value: '{output_format}'. Supported values are: 'png', "
                             "'jpeg', and 'webp'.", "output_format")
    background = str(body.get("background") or "auto")
    if background == "transparent" and output_format == "jpeg":
        raise InvalidRequest("Transparent background is not supported for output format "
                             "'jpeg'.", "background")
    width, height = _size(model, body.get("size"))
    quality = str(body.get("quality") or "auto")
    return ImagesRequest(
        model=model, prompt=prompt, n=n, width=width, height=height,
        output_format=output_format if gpt_image else "png",
        quality="high" if quality == "auto" else quality,
        background="transparent" if background == "transparent" else "opaque",
        response_format=str(body.get("response_format") or default_response_format),
    )


def _usage(req: ImagesRequest, images: int) -> JSON:
    per_image = QUALITY_TOKENS_1024.get(req.quality, 4160) * req.width * req.height // 1024**2
    text_tokens = max(1, len(req.prompt) // 4)
    return {
        "total_tokens": text_tokens + per_image * images,
        "input_tokens": text_tokens,
        "output_tokens": per_image * images,
        "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
        "output_tokens_details": {"image_tokens": per_image * images, "text_tokens": 0},
    }


async def success_body(
    state: SimState, request: Request, req: ImagesRequest, *, corrupt: bool, images: int,
    files_prefix: str,
) -> JSON:
    spec = ImageSpec(req.prompt, req.width, req.height, req.output_format,
                     transparent=req.background == "transparent", corrupt=corrupt)
    data: list[JSON] = []
    for _ in range(images):
        if req.response_format == "url" and not req.is_gpt_image:
            file_id = state.files.put(spec)
            url = f"{base_url(request)}/{files_prefix}/files/{file_id}.{req.output_format}"
            item: JSON = {"url": url}
        else:
            item = {"b64_json": await image_b64(spec)}
        if not req.is_gpt_image:
            item["revised_prompt"] = req.prompt
        data.append(item)
    body: JSON = {"created": int(time.time()), "data": data}
    if req.is_gpt_image:
        body.update(background=req.background, output_format=req.output_format, size=req.size,
                    quality=req.quality, usage=_usage(req, images))
    return body


def _headers(rid: str, decision: Decision) -> dict[str, str]:
    return {
        "x-request-id": rid,
        "openai-version": "2020-10-01",
        "openai-processing-ms": str(int(decision.latency_s * 1000)),
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "0" if decision.kind is Kind.QUOTA else "49",
        "x-ratelimit-reset-requests": f"{RETRY_AFTER_S}s" if decision.kind is Kind.QUOTA else "1s",
    }


def error_for(kind: Kind, req: ImagesRequest | None, rid: str) -> tuple[int, JSON]:
    model = req.model if req else "gpt-image-1.5"
    dalle = req is not None and not req.is_gpt_image
    if kind in (Kind.CONTENT_POLICY, Kind.PROMPT_BLOCKED) and dalle:
        return 400, error_body("Your request was rejected as a result of our safety system. Your "
                               "prompt may contain text that is not allowed by our safety system.",
                               "invalid_request_error", "content_policy_violation")
    if kind in (Kind.CONTENT_POLICY, Kind.PROMPT_BLOCKED):
        stage = "input" if kind is Kind.PROMPT_BLOCKED else "output"
        body = error_body("Your request was rejected by the safety system. If you believe this is "
                          "an error, contact us at help.openai.com and include the request ID "
                          f"{rid}. safety_violations=[violence].",
                          "image_generation_user_error", "moderation_blocked")
        body["error"]["moderation_details"] = {"moderation_stage": stage,
                                               "categories": ["violence"]}
        return 400, body
    table: dict[Kind, tuple[int, JSON]] = {
        Kind.OVERLOADED: (503, error_body("The engine is currently overloaded, please try again "
                                          "later.", "service_unavailable_error",
                                          "server_is_overloaded")),
        Kind.SERVER_ERROR: (500, error_body(
            "An error occurred while processing your request. You can retry your request, or "
            "contact us through our help center at help.openai.com if the error persists. Please "
            f"include the request ID {rid} in your message.", "server_error", "server_error")),
        Kind.DEADLINE: (502, {"error": {"code": 502, "message": "Bad gateway.", "param": None,
                                        "type": "cf_bad_gateway"}}),
        Kind.QUOTA: (429, error_body(f"Rate limit reached for {model} on images per minute. "
                                     f"Please try again in {RETRY_AFTER_S}s.", "requests",
                                     "rate_limit_exceeded")),
        Kind.AUTH: (401, error_body("Incorrect API key provided. You can find your API key at "
                                    "https://platform.openai.com/account/api-keys.",
                                    "invalid_request_error", "invalid_api_key")),
        Kind.BILLING: (429, error_body("You exceeded your current quota, please check your plan "
                                       "and billing details.", "insufficient_quota",
                                       "insufficient_quota")),
        Kind.INVALID_REQUEST: (400, error_body("Invalid value: 'banana'. Supported values are: "
                                               "'low', 'medium', 'high', and 'auto'.",
                                               "invalid_request_error", "invalid_value",
                                               "quality")),
    }
    return table[kind]


SUPPORTED = COMMON_KINDS


def routes(state: SimState) -> list[Route]:
    async def generate(request: Request) -> Response:
        rid = f"req_{request_id()}"
        body = await read_json(request)
        invalid: InvalidRequest | None = None
        req: ImagesRequest | None = None
        try:
            req = parse_request(body, default_response_format="url")
        except InvalidRequest as exc:
            invalid = exc
        prompt = str((body or {}).get("prompt") or "")
        model = str((body or {}).get("model") or "dall-e-2")
        forced = None
        if bearer_token(request) is None:
            forced = Kind.AUTH
        elif invalid is not None:
            forced = Kind.INVALID_REQUEST

        async def respond(decision: Decision) -> Response:
            headers = _headers(rid, decision)
            if decision.kind is Kind.QUOTA:
                headers.update({"retry-after": str(round(RETRY_AFTER_S)),
                                "retry-after-ms": str(int(RETRY_AFTER_S * 1000))})
            if forced is Kind.AUTH:
                return json_response(error_body(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error", None), 401, headers)
            if invalid is not None:
                return json_response(error_body(invalid.message, "invalid_request_error",
                                                invalid.code, invalid.param), 400, headers)
            assert req is not None
            kind = decision.kind
            if kind is Kind.GARBAGE_HTML:
                return garbage_html_response(headers)
            if kind in (Kind.OK, Kind.NO_IMAGE, Kind.TRUNCATED_JSON, Kind.BAD_BASE64):
                count = 0 if kind is Kind.NO_IMAGE else req.n
                ok = await success_body(state, request, req, corrupt=kind is Kind.BAD_BASE64,
                                        images=count, files_prefix="openai")
                if kind is Kind.TRUNCATED_JSON:
                    return truncated_json_response(ok, headers)
                return json_response(ok, 200, headers)
            status, error = error_for(kind, req, rid)
            return json_response(error, status, headers)

        return await run_call(state, request, vendor="openai", model=model, prompt=prompt,
                              supported=SUPPORTED, respond=respond, forced=forced)

    return [Route("/openai/v1/images/generations", generate, methods=["POST"])]
