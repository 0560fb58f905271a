"""Recraft ``POST /images/generations`` (recraftv4 raster, recraftv4_vector SVG).

The model is always sent: Recraft's default changes between releases. Error bodies are not
documented, so they are read defensively (code / message / detail / error) and classified
mostly by HTTP status. A vector model must answer SVG.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx

from providers.adapters.common import (
    HttpAdapter,
    images_or_error,
    option,
    post_images_generations,
    timeout_for,
    try_image,
)
from providers.adapters.images import SVG_TYPE, decode_base64_image, download_image
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult

_BODY_OPTIONS = ("style", "substyle", "style_id", "negative_prompt", "controls", "text_layout")


class RecraftAdapter(HttpAdapter):
    wire_format = "recraft"

    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        body, header_request_id = post_images_generations(client, model, self.body(model, request))
        data = body.get("data") or []
        images = images_or_error(
            [try_image(partial(_image, client, model, item)) for item in data]
        )
        first = data[0] if data and isinstance(data[0], dict) else {}
        request_id = first.get("image_id") or header_request_id
        credits = body.get("credits")
        return GenerationResult(
            images=images,
            request_id=str(request_id) if request_id else None,
            vendor_cost=float(credits) if isinstance(credits, int | float) else None,
        )

    @staticmethod
    def body(model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.vendor_model,
            "prompt": request.prompt,
            "n": request.n,
            "response_format": option(model, "response_format", "url"),
        }
        size = f"{request.width}x{request.height}"
        if not model.sizes or size in model.sizes:
            body["size"] = size
        for name in _BODY_OPTIONS:
            if name in model.options:
                body[name] = model.options[name]
        return body


def _image(client: httpx.Client, model: ModelSpec, item: Any) -> GeneratedImage:
    if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
        image = decode_base64_image(model.id, item["b64_json"])
    elif isinstance(item, dict) and isinstance(item.get("url"), str):
        image = download_image(client, model.id, item["url"], timeout_for(model))
    else:
        raise ProviderError(ErrorClass.SERVER_ERROR, f"{model.id}: data item without an image")
    if "svg" in model.capabilities and image.content_type != SVG_TYPE:
        raise ProviderError(
            ErrorClass.SERVER_ERROR, f"{model.id}: vector model answered {image.content_type}"
        )
    return image
