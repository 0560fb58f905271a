"""One adapter per vendor wire format, chosen by ``ModelSpec.wire_format``.

    adapter_for("gemini").generate(client, model, request) -> GenerationResult

Every adapter raises only ``ProviderError`` (never an httpx exception), verifies every image,
and sets ``cost_usd`` on success. Prefer ``providers.call``, which also checks the model can
serve the request before any traffic.
"""

from __future__ import annotations

from providers.adapters.bfl import BflAdapter
from providers.adapters.common import HttpAdapter
from providers.adapters.gemini import GeminiAdapter
from providers.adapters.openai_images import OpenAICompatibleAdapter, OpenAIImagesAdapter
from providers.adapters.recraft import RecraftAdapter
from providers.adapters.seedream import SeedreamAdapter
from providers.base import Adapter

__all__ = [
    "ADAPTERS", "BflAdapter", "GeminiAdapter", "HttpAdapter", "OpenAICompatibleAdapter",
    "OpenAIImagesAdapter", "RecraftAdapter", "SeedreamAdapter", "adapter_for",
]

ADAPTERS: dict[str, HttpAdapter] = {
    adapter.wire_format: adapter
    for adapter in (
        GeminiAdapter(), OpenAIImagesAdapter(), OpenAICompatibleAdapter(), BflAdapter(),
        SeedreamAdapter(), RecraftAdapter(),
    )
}


def adapter_for(wire_format: str) -> Adapter:
    """The adapter for a wire format; KeyError names the known ones."""
    try:
        return ADAPTERS[wire_format]
    except KeyError:
        raise KeyError(
            f"no adapter for wire format {wire_format!r} (known: {', '.join(sorted(ADAPTERS))})"
        ) from None
