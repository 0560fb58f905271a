"""Parsing and validating a catalogue TOML file into ``Catalogue``.

Every rejection names the file, the entry (``model 'x'``, ``route 'y'``) and the reason, so an
operator can fix a typo without reading code. Unknown fields are errors, not silently ignored.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from providers.catalogue import (
    CAPABILITIES,
    WIRE_FORMATS,
    Catalogue,
    CatalogueError,
    ModelSpec,
    Route,
)

_SIZE = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*$")
_REQUIRED_TEXT = ("id", "vendor", "wire_format", "vendor_model", "base_url", "api_key_env")
_POSITIVE_FLOATS = ("baseline_latency_s", "timeout_s", "connect_timeout_s")
_POSITIVE_INTS = (
    "max_concurrency", "requests_per_minute", "min_width", "min_height", "max_width",
    "max_height", "max_images_per_call",
)
_MODEL_FIELDS = frozenset(
    _REQUIRED_TEXT + _POSITIVE_FLOATS + _POSITIVE_INTS
    + ("price_per_image_usd", "sizes", "capabilities", "options")
)
_ROUTE_FIELDS = frozenset({"models", "allow_fallback"})


def parse_catalogue(text: str, source: Path) -> Catalogue:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(source, "document", f"bad TOML syntax: {exc}") from exc
    unknown = set(document) - {"models", "routes"}
    if unknown:
        raise CatalogueError(source, "document", f"unknown top-level key(s) {sorted(unknown)}")
    raw_models = document.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise CatalogueError(source, "models", "expected one or more [[models]] tables")
    models: dict[str, ModelSpec] = {}
    for index, raw in enumerate(raw_models):
        model = _model(raw, source, index)
        if model.id in models:
            raise CatalogueError(source, f"model {model.id!r}", "duplicate model id")
        models[model.id] = model
    raw_routes = document.get("routes", {})
    if not isinstance(raw_routes, dict):
        raise CatalogueError(source, "routes", "expected [routes.NAME] tables")
    routes = {name: _route(name, raw, models, source) for name, raw in raw_routes.items()}
    return Catalogue(models=models, routes=routes, source=source)


def _model(raw: Any, source: Path, index: int) -> ModelSpec:
    entry = f"models[{index}]"
    if not isinstance(raw, dict):
        raise CatalogueError(source, entry, "expected a table")
    if isinstance(raw.get("id"), str) and raw["id"]:
        entry = f"model {raw['id']!r}"

    def fail(reason: str) -> CatalogueError:
        return CatalogueError(source, entry, reason)

    unknown = set(raw) - _MODEL_FIELDS
    if unknown:
        raise fail(f"unknown field(s) {sorted(unknown)}")
    for name in _REQUIRED_TEXT:
        if not isinstance(raw.get(name), str) or not raw[name].strip():
            raise fail(f"missing or empty text field {name!r}")
    if raw["wire_format"] not in WIRE_FORMATS:
        raise fail(
            f"unknown wire_format {raw['wire_format']!r} (known: {', '.join(sorted(WIRE_FORMATS))})"
        )
    if not raw["base_url"].startswith(("http://", "https://")):
        raise fail(f"base_url {raw['base_url']!r} is not an http(s) URL")
    price = raw.get("price_per_image_usd")
    if isinstance(price, bool) or not isinstance(price, int | float) or price < 0:
        raise fail("price_per_image_usd must be a number >= 0")
    numbers: dict[str, Any] = {}
    for name in _POSITIVE_FLOATS:
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise fail(f"{name} must be a number > 0")
            numbers[name] = float(value)
    for name in _POSITIVE_INTS:
        if name in raw:
            value = raw[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise fail(f"{name} must be an integer > 0")
            numbers[name] = value
    sizes = raw.get("sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(s, str) and _SIZE.match(s) for s in sizes):
        raise fail('sizes must be a list of "WxH" strings')
    capabilities = raw.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
        raise fail("capabilities must be a list of strings")
    unknown_caps = set(capabilities) - CAPABILITIES
    if unknown_caps:
        raise fail(f"unknown capability {sorted(unknown_caps)} (known: {sorted(CAPABILITIES)})")
    options = raw.get("options", {})
    if not isinstance(options, dict):
        raise fail("options must be a table")
    return ModelSpec(
        **{name: raw[name] for name in _REQUIRED_TEXT},
        price_per_image_usd=float(price),
        sizes=tuple(sizes),
        capabilities=frozenset(capabilities),
        options=dict(options),
        **numbers,
    )


def _route(name: str, raw: Any, models: dict[str, ModelSpec], source: Path) -> Route:
    entry = f"route {name!r}"
    if not isinstance(raw, dict):
        raise CatalogueError(source, entry, "expected a table")
    unknown = set(raw) - _ROUTE_FIELDS
    if unknown:
        raise CatalogueError(source, entry, f"unknown field(s) {sorted(unknown)}")
    chain = raw.get("models")
    if not isinstance(chain, list) or not chain or not all(isinstance(m, str) for m in chain):
        raise CatalogueError(source, entry, "models must be a non-empty list of model ids")
    for model_id in chain:
        if model_id not in models:
            raise CatalogueError(source, entry, f"names unknown model {model_id!r}")
    allow_fallback = raw.get("allow_fallback", True)
    if not isinstance(allow_fallback, bool):
        raise CatalogueError(source, entry, "allow_fallback must be true or false")
    return Route(name=name, models=tuple(chain), allow_fallback=allow_fallback)
