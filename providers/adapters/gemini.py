"""Google Gemini ``generateContent`` (gemini-3-pro-image-preview, gemini-2.5-flash-image).

Blocking arrives as HTTP 200: ``promptFeedback.blockReason`` or a blocking ``finishReason``
is CONTENT_POLICY; any other 200 without an image (NO_IMAGE, IMAGE_OTHER, text only) is a
model failure (SERVER_ERROR).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import httpx

from providers.adapters.common import (
    HttpAdapter,
    api_key_for,
    images_or_error,
    option,
    post_json,
    success_json,
    try_image,
)
from providers.adapters.images import decode_base64_image
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
BLOCKING_FINISH_REASONS = frozenset({
    "SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST",
    "SPII", "RECITATION", "IMAGE_RECITATION",
})
_IMAGE_SIZES_BY_PIXELS = ((1_200_000, "1K"), (4_500_000, "2K"))


def nearest_aspect_ratio(width: int, height: int, choices: tuple[str, ...] = ASPECT_RATIOS) -> str:
    """The supported ratio closest to width:height (compared on a log scale)."""
    wanted = math.log(width / height)

    def distance(ratio: str) -> float:
        w, h = ratio.split(":")
        return abs(math.log(int(w) / int(h)) - wanted)

    return min(choices, key=distance)


def image_size_for(width: int, height: int) -> str:
    pixels = width * height
    return next((size for limit, size in _IMAGE_SIZES_BY_PIXELS if pixels <= limit), "4K")


class GeminiAdapter(HttpAdapter):
    wire_format = "gemini"

    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        url = f"{model.base_url.rstrip('/')}/v1beta/models/{model.vendor_model}:generateContent"
        response = post_json(
            client, model, url, self.body(model, request),
            {"x-goog-api-key": api_key_for(model)},
        )
        body = success_json(response, model)
        request_id = body.get("responseId") if isinstance(body.get("responseId"), str) else None
        images = images_or_error(
            [try_image(partial(_image, model, part)) for part in _image_parts(body)]
        )
        if not images:
            raise _no_image_error(model, body, request_id)
        return GenerationResult(images=images, request_id=request_id)

    @staticmethod
    def body(model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        image_config: dict[str, str] = {
            "aspectRatio": nearest_aspect_ratio(request.width, request.height)
        }
        if "image_size" in model.capabilities or option(model, "image_size", False):
            image_config["imageSize"] = image_size_for(request.width, request.height)
        return {
            "contents": [{"role": "user", "parts": [{"text": request.prompt}]}],
            "generationConfig": {
                "responseModalities": ["IMAGE"],
                "imageConfig": image_config,
                "candidateCount": 1,
            },
        }



def _image(model: ModelSpec, part: dict[str, Any]) -> GeneratedImage:
    blob = part.get("inlineData") or part.get("inline_data") or {}
    return decode_base64_image(model.id, str(blob["data"]))


def _image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for candidate in body.get("candidates") or []:
        content = candidate.get("content") if isinstance(candidate, dict) else None
        for part in (content or {}).get("parts") or []:
            blob = part.get("inlineData") or part.get("inline_data")
            mime_type = str((blob or {}).get("mimeType") or (blob or {}).get("mime_type") or "")
            if blob and mime_type.startswith("image/") and part.get("thought") is not True:
                parts.append(part)
    return parts


def _no_image_error(
    model: ModelSpec, body: dict[str, Any], request_id: str | None
) -> ProviderError:
    feedback = body.get("promptFeedback") or {}
    block_reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
    if block_reason:
        return ProviderError(
            ErrorClass.CONTENT_POLICY, f"{model.id}: prompt blocked ({block_reason})",
            vendor_status=200, vendor_code=str(block_reason), request_id=request_id,
        )
    reasons = [str(c.get("finishReason")) for c in body.get("candidates") or []
               if isinstance(c, dict) and c.get("finishReason")]
    blocking = [reason for reason in reasons if reason in BLOCKING_FINISH_REASONS]
    if blocking:
        return ProviderError(
            ErrorClass.CONTENT_POLICY, f"{model.id}: generation blocked ({blocking[0]})",
            vendor_status=200, vendor_code=blocking[0], request_id=request_id,
        )
    reason = reasons[0] if reasons else None
    return ProviderError(
        ErrorClass.SERVER_ERROR,
        f"{model.id}: no image in the answer (finishReason {reason or 'absent'})",
        vendor_status=200, vendor_code=reason, request_id=request_id,
    )
