"""What every adapter is: one per wire format, not per model. The data it takes and returns is in
``providers.types``; the model it calls is a catalogue ``ModelSpec``."""

from __future__ import annotations

from typing import Protocol

import httpx

from providers.catalogue import ModelSpec
from providers.types import GenerationRequest, GenerationResult, TaskHooks


class Adapter(Protocol):
    """Calls one vendor wire format. Raises ``ProviderError`` for every non-image answer."""

    def generate(
        self, client: httpx.Client, model: ModelSpec, request: GenerationRequest,
        tasks: TaskHooks | None = None,
    ) -> GenerationResult: ...
