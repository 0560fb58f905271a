"""What the OpenAI-compatible gateway decides before the queue: which walk a ``model`` name
means, and what a valid ``images.generate`` request is.

A ``model`` name resolves, in this order:

* omitted or ``auto``: the default route;
* a catalogue model id, or a model's vendor id (``vendor_model``, the name users know from the
  vendor): that model first, then the default route's other models (``PREFERRED_ROUTE``, the walk
  rule of ``providers/catalogue.py``); with ``x-imagequeue-fallback: none`` that model only;
* a route name: its chain; with ``x-imagequeue-fallback: none`` its first model only.

Anything else is unknown (a 404). ``GET /v1/models/{id}`` resolves ids the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from api.openai_errors import GatewayError
from api.openai_schemas import GATEWAY_QUALITIES, UNSUPPORTED_PARAMETERS, ImageGenerationRequest
from providers.catalogue import DEFAULT_ROUTE, Catalogue
from scheduler.job_spec import (
    MAX_SIDE_PX,
    MIN_SIDE_PX,
    SIZE_PATTERN,
    JobLimits,
    parse_size,
    shown,
    text_problem,
)

AUTO = "auto"
AUTO_SIZE = (1024, 1024)
FALLBACK_HEADER = "x-imagequeue-fallback"
WAIT_HEADER = "x-imagequeue-wait"


@dataclass(frozen=True)
class Target:
    """What a ``model`` name resolved to: a catalogue model or a route, and whether the walk
    may go on past it."""

    kind: Literal["model", "route"]
    name: str
    fallback: bool = True

    def job_fields(self) -> dict[str, Any]:
        """The JobRequest fields that make the queue walk this target."""
        if self.kind == "model":
            return {"model": self.name, "model_fallback": self.fallback}
        return {"route": self.name}


def find_name(catalogue: Catalogue, name: str | None) -> Target | None:
    """The model or route ``name`` means (see the module's order); None if it means nothing."""
    if name is None or name == AUTO:
        return Target("route", DEFAULT_ROUTE)
    if name in catalogue.models:
        return Target("model", name)
    by_vendor = [m.id for m in catalogue.models.values() if m.vendor_model == name]
    if by_vendor:  # several models may call one vendor model: the default route's comes first
        default = catalogue.routes[DEFAULT_ROUTE].models
        by_vendor.sort(key=lambda m: (m not in default, default.index(m) if m in default else 0))
        return Target("model", by_vendor[0])
    if name in catalogue.routes:
        return Target("route", name)
    return None


def resolve(catalogue: Catalogue, name: str | None, fallback: bool) -> Target:
    """The target of a generate request; GatewayError 404 (OpenAI's ``model_not_found``)."""
    found = find_name(catalogue, name)
    if found is None:
        assert name is not None
        routes = ", ".join(sorted(catalogue.routes))
        raise GatewayError(
            404, f"The model '{shown(name)}' does not exist. Use a model id or route name of "
                 f"GET /v1/models (routes: {routes}), or 'auto'.",
            code="model_not_found", param="model")
    if fallback:
        return found
    if found.kind == "route":  # no fallback on a route: its first model only
        return Target("model", catalogue.routes[found.name].models[0], fallback=False)
    return Target("model", found.name, fallback=False)


def parse_fallback(value: str | None) -> bool:
    if value is None or value.strip().lower() in ("", "default"):
        return True
    if value.strip().lower() == "none":
        return False
    raise GatewayError(400, f"Invalid value for header '{FALLBACK_HEADER}': '{shown(value)}'. "
                            f"Supported values are: 'default' (fall back along the default "
                            f"route) and 'none' (this model only).",
                       code="invalid_value", param=FALLBACK_HEADER)


def parse_wait(value: str | None, most_s: float) -> float:
    """The seconds a call may wait: ``x-imagequeue-wait`` if sent (at most ``most_s``)."""
    if value is None:
        return most_s
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise GatewayError(400, f"Invalid value for header '{WAIT_HEADER}': '{shown(value)}'. "
                                f"Send a number of seconds greater than 0 (at most {most_s:g}).",
                           code="invalid_value", param=WAIT_HEADER)
    return min(seconds, most_s)


# --- the request ------------------------------------------------------------------------------

_TYPE_NAMES = {"string_type": "a string", "int_type": "an integer", "bool_type": "a boolean"}
_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
               list: "an array", dict: "an object", type(None): "null"}


def _got(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def validate_request(body: dict[str, Any], limits: JobLimits) -> ImageGenerationRequest:
    """A generate request as OpenAI checks it: one error, naming its parameter (GatewayError)."""
    for name, why in UNSUPPORTED_PARAMETERS.items():
        if body.get(name) is not None:
            raise GatewayError(400, f"The parameter '{name}' is not supported by this gateway: "
                                    f"{why}.", code="unsupported_parameter", param=name)
    body = {k: v for k, v in body.items() if k not in UNSUPPORTED_PARAMETERS}
    try:
        request = ImageGenerationRequest.model_validate(body)
    except ValidationError as exc:
        raise _first_problem(exc, body) from None
    problem = text_problem(request.prompt)
    if problem is None and not request.prompt.strip():
        problem = "must not be empty"
    if problem is None and len(request.prompt) > limits.max_prompt_chars:
        problem = (f"is {len(request.prompt)} characters long; the maximum is "
                   f"{limits.max_prompt_chars}")
    if problem is not None:
        raise GatewayError(400, f"Invalid 'prompt': {problem}.", code="invalid_value",
                           param="prompt")
    for name in ("model", "user", "safety_identifier"):
        value = getattr(request, name)
        if value is not None and (problem := text_problem(value)):
            raise GatewayError(400, f"Invalid '{name}': {problem}.", code="invalid_value",
                               param=name)
    if request.n is not None and request.n > limits.max_images_per_job:
        raise GatewayError(400, f"Invalid 'n': {request.n} is greater than the maximum of "
                                f"{limits.max_images_per_job}.", code="integer_above_max_value",
                           param="n")
    dimensions(request)  # a bad size is refused here
    return request


def _first_problem(exc: ValidationError, body: dict[str, Any]) -> GatewayError:
    error = exc.errors(include_url=False)[0]
    loc = [str(p) for p in error["loc"]]
    param = loc[0] if loc else None
    kind = error["type"]
    if kind == "missing":
        return GatewayError(400, f"Missing required parameter: '{param}'.",
                            code="missing_required_parameter", param=param)
    if kind == "extra_forbidden":
        return GatewayError(400, f"Unknown parameter: '{shown(str(param))}'.",
                            code="unknown_parameter", param=shown(str(param)))
    value = body.get(param) if param is not None else None
    if kind == "literal_error":
        allowed = {"quality": GATEWAY_QUALITIES, "response_format": ("b64_json", "url"),
                   "background": (AUTO,), "moderation": (AUTO,), "stream": ("false",)}
        supported = ", ".join(f"'{v}'" for v in allowed.get(param or "", ()))
        shown_value = shown(value) if isinstance(value, str) else repr(value)
        return GatewayError(400, f"Invalid value: '{shown_value}'. Supported values are: "
                                 f"{supported}.", code="invalid_value", param=param)
    expected = _TYPE_NAMES.get(kind)
    if expected is not None:
        return GatewayError(400, f"Invalid type for '{param}': expected {expected}, but got "
                                 f"{_got(value)} instead.", code="invalid_type", param=param)
    if kind == "greater_than_equal":
        return GatewayError(400, f"Invalid '{param}': {value!r} is less than the minimum of 1.",
                            code="integer_below_min_value", param=param)
    if kind == "string_too_short":
        return GatewayError(400, f"Invalid '{param}': must not be empty.", code="invalid_value",
                            param=param)
    if kind == "string_too_long":
        limit = (error.get("ctx") or {}).get("max_length")
        return GatewayError(400, f"Invalid '{param}': longer than {limit} characters.",
                            code="string_above_max_length", param=param)
    message = str(error["msg"]).removeprefix("Value error, ")
    return GatewayError(400, f"Invalid '{param}': {message}.", code="invalid_value", param=param)


def dimensions(request: ImageGenerationRequest) -> tuple[int, int]:
    if request.size is None or request.size == AUTO:
        return AUTO_SIZE
    try:
        return parse_size(request.size)
    except ValueError:
        why = ("Use WIDTHxHEIGHT, such as 1024x1024, or 'auto'"
               if SIZE_PATTERN.fullmatch(request.size) is None else
               f"Each side must be between {MIN_SIDE_PX} and {MAX_SIDE_PX} pixels")
        raise GatewayError(400, f"Invalid value for 'size': '{shown(request.size)}'. {why}.",
                           code="invalid_value", param="size") from None
