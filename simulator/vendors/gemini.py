"""Gemini ``models/{model}:generateContent`` (providers.md section 1)."""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulator.images import NOT_AN_IMAGE, ImageSpec
from simulator.outcomes import Kind
from simulator.state import Decision, SimState
from simulator.vendors.common import (
    COMMON_KINDS,
    JSON,
    SIZES_1K,
    garbage_html_response,
    image_b64,
    json_response,
    read_json,
    request_id,
    run_call,
    truncated_json_response,
)

API_VERSIONS = ("v1beta", "v1", "v1alpha")
SIZE_FACTORS = {"512px": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}
RETRY_DELAY = "7s"
RETRY_IN_S = 7.2
FINISH_REASONS = {"STOP", "SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY",
                  "IMAGE_PROHIBITED_CONTENT", "NO_IMAGE", "IMAGE_OTHER", "IMAGE_RECITATION",
                  "RECITATION", "OTHER", "BLOCKLIST", "SPII"}
BLOCK_REASONS = {"SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT", "IMAGE_SAFETY"}
INVALID_KEY_MESSAGE = "API key not valid. Please pass a valid API key."


def error_body(code: int, status: str, message: str, details: list[JSON] | None = None) -> JSON:
    error: JSON = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def quota_error(model: str) -> JSON:
    return error_body(429, "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits. "
        f"Please retry in {RETRY_IN_S}s.",
        [{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_paid_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
            "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "20"}]},
         {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
             "description": "Learn more about Gemini API quotas",
             "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
         {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": RETRY_DELAY}])


def auth_error() -> JSON:
    return error_body(400, "INVALID_ARGUMENT", INVALID_KEY_MESSAGE, [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com",
         "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": INVALID_KEY_MESSAGE}])


def error_for(kind: Kind, model: str, detail: str | None) -> JSON:
    """The Gemini error body for an error outcome; the HTTP status is ``error.code``."""
    overloaded = (
        "The model is overloaded. Please try again later." if detail == "overloaded" else
        "This model is currently experiencing high demand. Spikes in demand are usually "
        "temporary. Please try again later."
    )
    bodies: dict[Kind, JSON] = {
        Kind.OVERLOADED: error_body(503, "UNAVAILABLE", overloaded),
        Kind.SERVER_ERROR: error_body(500, "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"),
        Kind.DEADLINE: error_body(504, "DEADLINE_EXCEEDED",
                                  "Deadline expired before operation could complete."),
        Kind.QUOTA: quota_error(model),
        Kind.AUTH: auth_error(),
        Kind.BILLING: error_body(402, "RESOURCE_EXHAUSTED",
            "Your prepayment credits are depleted. Please go to AI Studio at "
            "https://ai.studio/projects to manage your project and billing."),
        Kind.INVALID_REQUEST: error_body(400, "INVALID_ARGUMENT",
                                         "Request contains an invalid argument."),
    }
    return bodies[kind]


def _prompt(body: JSON) -> str:
    contents: Any = body.get("contents", [])
    contents = [contents] if isinstance(contents, dict) else contents
    texts = [
        part["text"]
        for content in contents if isinstance(content, dict)
        for part in content.get("parts", []) if isinstance(part, dict) and "text" in part
    ]
    return "\n".join(str(t) for t in texts)


def _pixel_size(config: JSON) -> tuple[int, int] | str:
    """Width and height from ``imageConfig``, or the reason it is invalid."""
    image_config = config.get("imageConfig") or {}
    ratio = str(image_config.get("aspectRatio") or "1:1")
    size = str(image_config.get("imageSize") or "1K")
    if ratio not in SIZES_1K:
        return f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: " \
               f"unsupported aspect ratio '{ratio}'"
    if size not in SIZE_FACTORS:
        return f"* GenerateContentRequest.generation_config.image_config.image_size: " \
               f"unsupported image size '{size}' (use 1K, 2K or 4K)"
    width, height = SIZES_1K[ratio]
    factor = SIZE_FACTORS[size]
    return int(width * factor), int(height * factor)


def _envelope(model: str, prompt: str, image_tokens: int) -> JSON:
    prompt_tokens = max(1, len(prompt) // 4)
    return {
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": image_tokens,
            "totalTokenCount": prompt_tokens + image_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": image_tokens}],
        },
        "modelVersion": model,
        "responseId": request_id()[:22],
    }


async def _answer(kind: Kind, detail: str | None, model: str, prompt: str,
                  size: tuple[int, int], with_text: bool) -> JSON:
    """The HTTP 200 bodies: an image, a block, or text only."""
    if kind is Kind.PROMPT_BLOCKED:
        reason = detail if detail in BLOCK_REASONS else "PROHIBITED_CONTENT"
        return {"promptFeedback": {"blockReason": reason}, **_envelope(model, prompt, 0)}
    if kind is Kind.CONTENT_POLICY or (kind is Kind.NO_IMAGE and detail in FINISH_REASONS):
        default = "IMAGE_SAFETY" if kind is Kind.CONTENT_POLICY else "NO_IMAGE"
        reason = detail if detail in FINISH_REASONS else default
        return {"candidates": [{"finishReason": reason, "index": 0}],
                **_envelope(model, prompt, 0)}
    parts: list[JSON] = []
    if with_text or kind is Kind.NO_IMAGE:
        parts.append({"text": "I can't draw that exactly, but here is a description instead."
                      if kind is Kind.NO_IMAGE else "Here is your image"})
    if kind is not Kind.NO_IMAGE:
        width, height = size
        data = (base64.b64encode(NOT_AN_IMAGE).decode() if kind is Kind.BAD_BASE64
                else await image_b64(ImageSpec(prompt, width, height)))
        parts.append({"inlineData": {"mimeType": "image/png", "data": data}})
    tokens = 0 if kind is Kind.NO_IMAGE else 1290
    return {"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                            "index": 0}], **_envelope(model, prompt, tokens)}


SUPPORTED = COMMON_KINDS


def routes(state: SimState) -> list[Route]:
    async def generate_content(request: Request) -> Response:
        model_and_method = request.path_params["target"]
        model, _, method = model_and_method.partition(":")
        if method != "generateContent":
            return json_response(error_body(404, "NOT_FOUND", f"Method {method!r} not found."),
                                 404)
        body = await read_json(request)
        prompt = _prompt(body or {})
        config = (body or {}).get("generationConfig") or {}
        size = _pixel_size(config) if isinstance(config, dict) else "bad generationConfig"
        api_key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        invalid = (
            "Invalid JSON payload received." if body is None
            else "* GenerateContentRequest.contents: contents is not specified" if not prompt
            else size if isinstance(size, str) else None
        )
        forced = Kind.AUTH if not api_key else Kind.INVALID_REQUEST if invalid else None
        modalities = config.get("responseModalities") if isinstance(config, dict) else None
        with_text = not modalities or "TEXT" in modalities

        async def respond(decision: Decision) -> Response:
            kind = decision.kind
            if forced is Kind.AUTH:
                return json_response(error_body(403, "PERMISSION_DENIED",
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to call "
                    "this API."), 403)
            if invalid is not None:
                return json_response(error_body(400, "INVALID_ARGUMENT", invalid), 400)
            assert not isinstance(size, str)
            if kind is Kind.GARBAGE_HTML:
                return garbage_html_response()
            if kind in (Kind.OK, Kind.NO_IMAGE, Kind.CONTENT_POLICY, Kind.PROMPT_BLOCKED,
                        Kind.TRUNCATED_JSON, Kind.BAD_BASE64):
                answer = await _answer(kind, decision.detail, model, prompt, size, with_text)
                if kind is Kind.TRUNCATED_JSON:
                    return truncated_json_response(answer)
                return json_response(answer)
            error = error_for(kind, model, decision.detail)
            return json_response(error, int(error["error"]["code"]))

        return await run_call(state, request, vendor="gemini", model=model, prompt=prompt,
                              supported=SUPPORTED, respond=respond, forced=forced)

    # The REST API is v1beta; recent google-genai releases call v1 by default.
    return [Route(f"/gemini/{version}/models/{{target}}", generate_content, methods=["POST"])
            for version in API_VERSIONS]
