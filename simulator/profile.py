"""Failure profiles: per vendor model, a latency distribution, an error mix and scheduled outages.

A profile is a JSON or TOML document (or a built-in name)::

    {"latency_scale": 1.0, "delivery_ttl_s": 600,
     "models": {"gemini-3-pro-image-preview": {
                    "latency": {"median_s": 12.0, "sigma": 0.35},      # lognormal
                    "errors": {"overloaded": 0.45},                    # probability per call
                    "outages": [{"start_s": 30, "end_s": 90, "kind": "overloaded", "rate": 1.0}],
                    "no_image_reason": "NO_IMAGE"},                    # optional, Gemini no_image
                "default": {"latency": {"median_s": 0.05, "sigma": 0.2}, "errors": {}}}}

Outage times are seconds since the profile was set (start-up, ``PUT /_sim/profile`` or
``POST /_sim/reset``), so a test that sets a profile controls its own clock.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simulator.outcomes import Kind

DEFAULT_ENTRY = "default"


class ProfileError(ValueError):
    """A profile that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Latency:
    median_s: float = 0.05
    sigma: float = 0.2


@dataclass(frozen=True)
class Outage:
    start_s: float
    end_s: float
    kind: Kind = Kind.OVERLOADED
    rate: float = 1.0

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= elapsed_s < self.end_s


@dataclass(frozen=True)
class ModelProfile:
    latency: Latency = field(default_factory=Latency)
    errors: dict[Kind, float] = field(default_factory=dict)
    outages: tuple[Outage, ...] = ()
    no_image_reason: str | None = None


@dataclass(frozen=True)
class Profile:
    models: dict[str, ModelProfile] = field(default_factory=dict)
    latency_scale: float = 1.0
    delivery_ttl_s: float = 600.0
    name: str = "custom"

    def for_model(self, model: str) -> ModelProfile:
        return self.models.get(model) or self.models.get(DEFAULT_ENTRY) or ModelProfile()

    def with_latency_scale(self, latency_scale: float) -> Profile:
        _check(latency_scale >= 0, "latency_scale", "must be >= 0")
        return replace(self, latency_scale=latency_scale)

    def with_outage(self, model: str, outage: Outage) -> Profile:
        entry = self.for_model(model)
        updated = replace(entry, outages=(*entry.outages, outage))
        return replace(self, models={**self.models, model: updated})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latency_scale": self.latency_scale,
            "delivery_ttl_s": self.delivery_ttl_s,
            "models": {name: _model_to_dict(entry) for name, entry in self.models.items()},
        }


def _model_to_dict(entry: ModelProfile) -> dict[str, Any]:
    return {
        "latency": {"median_s": entry.latency.median_s, "sigma": entry.latency.sigma},
        "errors": {kind.value: rate for kind, rate in entry.errors.items()},
        "outages": [
            {"start_s": o.start_s, "end_s": o.end_s, "kind": o.kind.value, "rate": o.rate}
            for o in entry.outages
        ],
        "no_image_reason": entry.no_image_reason,
    }


def _check(ok: bool, where: str, reason: str) -> None:
    if not ok:
        raise ProfileError(f"{where}: {reason}")


def _number(value: Any, where: str, *, low: float = 0.0, high: float = math.inf) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    _check(ok, where, f"must be a number, got {value!r}")
    number = float(value)
    _check(low <= number <= high, where, f"must be between {low} and {high}, got {number}")
    return number


def _only_keys(data: Any, allowed: set[str], where: str) -> dict[str, Any]:
    _check(isinstance(data, dict), where, "must be an object")
    unknown = set(data) - allowed
    _check(not unknown, where, f"unknown keys {sorted(unknown)}; allowed {sorted(allowed)}")
    return dict(data)


def _kind(value: Any, where: str) -> Kind:
    try:
        return Kind(value)
    except ValueError:
        known = [k.value for k in Kind]
        raise ProfileError(f"{where}: unknown outcome {value!r}; known {known}") from None


def parse_outage(data: Any, where: str) -> Outage:
    raw = _only_keys(data, {"start_s", "end_s", "kind", "rate"}, where)
    start_s = _number(raw.get("start_s", 0.0), f"{where}.start_s", low=-math.inf)
    end_s = _number(raw.get("end_s"), f"{where}.end_s", low=-math.inf)
    _check(end_s > start_s, where, f"end_s ({end_s}) must be after start_s ({start_s})")
    kind = _kind(raw.get("kind", "overloaded"), f"{where}.kind")
    rate = _number(raw.get("rate", 1.0), f"{where}.rate", high=1.0)
    return Outage(start_s=start_s, end_s=end_s, kind=kind, rate=rate)


def _parse_model(data: Any, where: str) -> ModelProfile:
    raw = _only_keys(data, {"latency", "errors", "outages", "no_image_reason"}, where)
    latency_raw = _only_keys(raw.get("latency", {}), {"median_s", "sigma"}, f"{where}.latency")
    latency = Latency(
        median_s=_number(latency_raw.get("median_s", 0.05), f"{where}.latency.median_s"),
        sigma=_number(latency_raw.get("sigma", 0.2), f"{where}.latency.sigma", high=5.0),
    )
    errors_raw = raw.get("errors", {})
    _check(isinstance(errors_raw, dict), f"{where}.errors", "must be an object")
    errors = {
        _kind(name, f"{where}.errors"): _number(rate, f"{where}.errors.{name}", high=1.0)
        for name, rate in errors_raw.items()
    }
    total = sum(errors.values())
    _check(total <= 1.0 + 1e-9, f"{where}.errors", f"probabilities sum to {total:.3f} > 1")
    outages_raw = raw.get("outages", [])
    _check(isinstance(outages_raw, list), f"{where}.outages", "must be a list")
    outages = tuple(parse_outage(o, f"{where}.outages[{i}]") for i, o in enumerate(outages_raw))
    reason = raw.get("no_image_reason")
    _check(reason is None or isinstance(reason, str), f"{where}.no_image_reason", "must be text")
    return ModelProfile(latency=latency, errors=errors, outages=outages, no_image_reason=reason)


def parse_profile(data: Any, name: str = "custom") -> Profile:
    """Validate a profile document; raises ``ProfileError`` naming the bad field."""
    raw = _only_keys(data, {"latency_scale", "delivery_ttl_s", "models", "name"}, "profile")
    models_raw = raw.get("models", {})
    _check(isinstance(models_raw, dict), "profile.models", "must be an object")
    models = {
        str(model): _parse_model(entry, f"models.{model}") for model, entry in models_raw.items()
    }
    return Profile(
        models=models,
        latency_scale=_number(raw.get("latency_scale", 1.0), "profile.latency_scale"),
        delivery_ttl_s=_number(raw.get("delivery_ttl_s", 600.0), "profile.delivery_ttl_s"),
        name=str(raw.get("name", name)),
    )


def _entry(median_s: float, sigma: float = 0.3, **errors: float) -> dict[str, Any]:
    return {"latency": {"median_s": median_s, "sigma": sigma}, "errors": errors}


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "healthy": {"models": {DEFAULT_ENTRY: _entry(0.05, 0.2)}},
    "peak-hours": {
        "models": {
            "gemini-3-pro-image-preview": _entry(12.0, 0.35, overloaded=0.45),
            "gemini-2.5-flash-image": _entry(6.0),
            "seedream-4-5-251128": _entry(8.0),
            "doubao-seedream-4-5-251128": _entry(8.0),
            "gpt-image-1.5": _entry(15.0),
            "flux-2-pro": _entry(6.0),
            "recraftv4": _entry(4.0),
            "recraftv4_vector": _entry(6.0),
            DEFAULT_ENTRY: _entry(5.0),
        }
    },
}


def load_profile(name_or_path: str | Path) -> Profile:
    """A built-in profile by name (``healthy``, ``peak-hours``) or a ``.json``/``.toml`` file."""
    key = str(name_or_path)
    if key in BUILTIN_PROFILES:
        return parse_profile(BUILTIN_PROFILES[key], name=key)
    path = Path(name_or_path)
    if not path.is_file():
        raise ProfileError(
            f"no built-in profile or file named {key!r}; built-ins: {sorted(BUILTIN_PROFILES)}"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ProfileError(f"{path}: not valid {kind}: {exc}") from None
    try:
        return parse_profile(data, name=path.stem)
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
