"""The model catalogue: every model we can call and every named route, loaded from TOML.

Model IDs live in the TOML file, never in code, so a vendor's renaming needs no release.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message names the file, the entry and the reason."""


@dataclass(frozen=True)
class ModelSpec:
    id: str                      # our name for the model, e.g. "gpt-image-1.5"
    vendor: str                  # "openai", "google", "bfl", "byteplus", "recraft", "aggregator"
    wire_format: str             # "openai_images", "gemini", "bfl", "seedream", "recraft", "openai_compatible"
    vendor_model: str            # the model ID on the wire
    base_url: str
    api_key_env: str
    price_per_image_usd: float
    sizes: tuple[str, ...] = ()  # "WxH" the model accepts; empty = any
    capabilities: frozenset[str] = frozenset()
    baseline_latency_s: float = 10.0
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    max_concurrency: int = 8
    requests_per_minute: int = 60
    options: dict[str, object] = field(default_factory=dict)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None


@dataclass(frozen=True)
class Route:
    name: str
    models: tuple[str, ...]
    allow_fallback: bool = True


@dataclass(frozen=True)
class Catalogue:
    models: dict[str, ModelSpec]
    routes: dict[str, Route]
    source: Path

    def model(self, model_id: str) -> ModelSpec:
        return self.models[model_id]

    def route(self, name: str) -> Route:
        return self.routes[name]
