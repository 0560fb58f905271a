"""ByteDance Seedream via Volcengine Ark / BytePlus ModelArk ``POST /images/generations``.

Sizes below the model's minimum pixel count (Seedream 4.5: 2560x1440) are scaled up keeping the
aspect ratio; a ``size`` option (e.g. "2K") overrides. Items of ``data[]`` may each carry an
``error`` instead of an image: the good ones are kept.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import httpx

from providers.adapters.classify import classify
from providers.adapters.common import (
    HttpAdapter,
    images_or_error,
    option,
    post_images_generations,
    timeout_for,
    try_image,
)
from providers.adapters.images import decode_base64_image, download_image
from providers.catalogue import ModelSpec
from providers.errors import ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult

_SIZE_STEP = 16


def wire_size(model: ModelSpec, width: int, height: int) -> str:
    preset = option(model, "size", "")
    if preset:
        return preset
    min_pixels = option(model, "min_pixels", 0)
    max_pixels = option(model, "max_pixels", 0)
    scale = 1.0
    if min_pixels and width * height < min_pixels:
        scale = math.sqrt(min_pixels / (width * height))
    elif max_pixels and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    round_to_step = math.ceil if scale >= 1.0 else math.floor
    width = int(round_to_step(width * scale / _SIZE_STEP) * _SIZE_STEP)
    height = int(round_to_step(height * scale / _SIZE_STEP) * _SIZE_STEP)
    return f"{width}x{height}"


class SeedreamAdapter(HttpAdapter):
    wire_format = "seedream"

    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        body, request_id = post_images_generations(client, model, self.body(model, request))
        data = body.get("data") or []
        if not data and isinstance(body.get("error"), dict):
            data = [body]
        images = images_or_error(
            [try_image(partial(_image, client, model, item, request_id)) for item in data]
        )
        return GenerationResult(images=images, request_id=request_id)

    @staticmethod
    def body(model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.vendor_model,
            "prompt": request.prompt,
            "size": wire_size(model, request.width, request.height),
            "response_format": option(model, "response_format", "url"),
            "watermark": option(model, "watermark", False),
        }
        if request.n > 1:
            body["sequential_image_generation"] = "auto"
            body["sequential_image_generation_options"] = {"max_images": request.n}
        else:
            body["sequential_image_generation"] = "disabled"
        return body


def _image(
    client: httpx.Client, model: ModelSpec, item: Any, request_id: str | None
) -> GeneratedImage:
    error = item.get("error") if isinstance(item, dict) else None
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or code or "item failed")
        raise ProviderError(
            classify(None, [code], message), f"{model.id}: {message}",
            vendor_status=200, vendor_code=code or None, request_id=request_id,
        )
    if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
        return decode_base64_image(model.id, item["b64_json"])
    if isinstance(item, dict) and isinstance(item.get("url"), str):
        return download_image(client, model.id, item["url"], timeout_for(model))
    raise ProviderError(
        classify(None, [], ""), f"{model.id}: data item without an image", request_id=request_id
    )
