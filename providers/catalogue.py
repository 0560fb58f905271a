"""The model catalogue: every model we can call and every named route, loaded from TOML.

Model IDs live in the TOML file, never in code, so a vendor's renaming needs no release.
The only vendor-specific constants here are the simulator's path prefixes per wire format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.base import GenerationRequest

DEFAULT_CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")

WIRE_FORMATS = frozenset(
    {"openai_images", "gemini", "bfl", "seedream", "recraft", "openai_compatible"}
)
CAPABILITIES = frozenset({"svg", "text_rendering", "edit", "image_size"})

# Where the vendor simulator serves each wire format, relative to its root URL.
SIMULATOR_PREFIXES: dict[str, str] = {
    "openai_images": "/openai/v1",
    "gemini": "/gemini",
    "bfl": "/bfl/v1",
    "seedream": "/ark/api/v3",
    "recraft": "/recraft/v1",
    "openai_compatible": "/aggregator/v1",
}


class CatalogueError(ValueError):
    """An unusable catalogue file; the message names the file, the entry and the reason."""

    def __init__(self, source: Path | str, entry: str, reason: str) -> None:
        super().__init__(f"{source}: {entry}: {reason}")
        self.source = str(source)
        self.entry = entry
        self.reason = reason


@dataclass(frozen=True)
class ModelSpec:
    id: str                      # our name for the model, e.g. "gpt-image-1.5"
    vendor: str                  # "openai", "google", "bfl", "byteplus", "recraft", "aggregator"
    wire_format: str             # one of WIRE_FORMATS
    vendor_model: str            # the model ID on the wire
    base_url: str
    api_key_env: str
    price_per_image_usd: float
    sizes: tuple[str, ...] = ()  # "WxH" the model accepts; empty = any within the min/max bounds
    capabilities: frozenset[str] = frozenset()
    baseline_latency_s: float = 10.0
    timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    max_concurrency: int = 8
    requests_per_minute: int = 60
    options: dict[str, object] = field(default_factory=dict)
    min_width: int = 64
    min_height: int = 64
    max_width: int = 4096
    max_height: int = 4096
    max_images_per_call: int = 1
    simulated: bool = False      # base_url rewritten to the vendor simulator (no key set)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    @property
    def configured(self) -> bool:
        """A call can be attempted: the key is set, or the model points at the simulator."""
        return self.simulated or self.api_key() is not None

    @property
    def missing_key_hint(self) -> str | None:
        """What an operator must do before this model can be called; None when configured."""
        return None if self.configured else f"set {self.api_key_env}"

    def can_serve(self, request: GenerationRequest) -> str | None:
        """None when this model can serve ``request``; otherwise the reason it cannot."""
        size = f"{request.width}x{request.height}"
        is_vector = "svg" in self.capabilities
        if request.vector is True and not is_vector:
            return f"{self.id} does not produce SVG"
        if request.vector is False and is_vector:
            return f"{self.id} produces only SVG"
        if request.n > self.max_images_per_call:
            return f"{self.id} returns at most {self.max_images_per_call} image(s) per call"
        if self.sizes and size not in self.sizes:
            return f"{self.id} does not offer {size} (offers {', '.join(self.sizes)})"
        if not (self.min_width <= request.width <= self.max_width) or not (
            self.min_height <= request.height <= self.max_height
        ):
            return (
                f"{self.id} does not offer {size} (from {self.min_width}x{self.min_height} "
                f"to {self.max_width}x{self.max_height})"
            )
        qualities = self.options.get("qualities")
        if isinstance(qualities, list) and request.quality not in (None, *qualities):
            return f"{self.id} does not offer quality {request.quality!r}"
        return None


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

    def pointed_at_simulator(self, sim_url: str) -> Catalogue:
        """A copy where every model without an API key in the environment calls the simulator."""
        root = sim_url.rstrip("/")
        models = {
            model_id: model
            if model.api_key() is not None
            else replace(
                model, base_url=root + SIMULATOR_PREFIXES[model.wire_format], simulated=True
            )
            for model_id, model in self.models.items()
        }
        return replace(self, models=models)

    @property
    def simulated_models(self) -> list[str]:
        return [model.id for model in self.models.values() if model.simulated]


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load and validate a catalogue file (the shipped ``catalogue.toml`` by default)."""
    from providers.catalogue_loader import parse_catalogue

    source = path or DEFAULT_CATALOGUE_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(source, "file", f"cannot read: {exc.strerror or exc}") from exc
    return parse_catalogue(text, source)
