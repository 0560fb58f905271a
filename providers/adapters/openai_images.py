"""OpenAI Images ``POST /images/generations`` (gpt-image-1.5), and the OpenAI-compatible gateways.

GPT image models always answer ``b64_json`` and reject ``response_format``; gateways accept it
and may answer ``url`` instead. Upstream error bodies that gateways stringify inside
``error.message`` are classified by their inner status (see ``classify.describe``).
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
from providers.adapters.images import decode_base64_image, download_image
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult

# Catalogue options passed through to the request body as they are.
_BODY_OPTIONS = ("background", "output_format", "output_compression", "moderation", "style")


class OpenAIImagesAdapter(HttpAdapter):
    wire_format = "openai_images"

    def _generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult:
        body, request_id = post_images_generations(client, model, self.body(model, request))
        data = body.get("data")
        if not isinstance(data, list):
            raise ProviderError(
                ErrorClass.SERVER_ERROR,
                f"{model.id}: answer has no data (an asynchronous gateway task?)",
                vendor_status=200, request_id=request_id,
            )
        images = images_or_error(
            [try_image(partial(_image, client, model, item)) for item in data]
        )
        return GenerationResult(images=images, request_id=request_id)

    def body(self, model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.vendor_model,
            "prompt": request.prompt,
            "n": request.n,
            "size": f"{request.width}x{request.height}",
        }
        if request.quality is not None:
            body["quality"] = request.quality
        for name in _BODY_OPTIONS:
            if name in model.options:
                body[name] = model.options[name]
        return body


class OpenAICompatibleAdapter(OpenAIImagesAdapter):
    """Any gateway speaking OpenAI's images API: base URL + one key, ``b64_json`` or ``url``."""

    wire_format = "openai_compatible"

    def body(self, model: ModelSpec, request: GenerationRequest) -> dict[str, Any]:
        body = super().body(model, request)
        body["response_format"] = option(model, "response_format", "b64_json")
        extra_body = model.options.get("extra_body")
        if isinstance(extra_body, dict):
            body.update(extra_body)
        return body


def _image(client: httpx.Client, model: ModelSpec, item: Any) -> GeneratedImage:
    if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
        return decode_base64_image(model.id, item["b64_json"])
    if isinstance(item, dict) and isinstance(item.get("url"), str):
        if item["url"].startswith("data:"):
            return decode_base64_image(model.id, item["url"])
        return download_image(client, model.id, item["url"], timeout_for(model))
    raise ProviderError(ErrorClass.SERVER_ERROR, f"{model.id}: data item without an image")
