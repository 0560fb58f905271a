"""What every adapter takes and returns. One adapter per wire format, not per model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from providers.catalogue import ModelSpec


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    width: int = 1024
    height: int = 1024
    n: int = 1
    quality: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    vector: bool | None = None  # True: SVG only; False: raster only; None: either will do


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str  # "image/png", "image/jpeg", "image/svg+xml"
    width: int
    height: int


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    request_id: str | None = None
    cost_usd: float = 0.0
    vendor_cost: float | None = None  # the vendor's own unit (BFL credits, Recraft units)


class Adapter(Protocol):
    """Calls one vendor wire format. Raises ``ProviderError`` for every non-image answer."""

    def generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest
    ) -> GenerationResult: ...
