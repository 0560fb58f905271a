"""The model catalogue: every model we can call, every named route, and the rule for which models
a job walks (``Catalogue.models_for``). Read from a TOML file (or a JSON one of the same schema).

Model IDs live in the catalogue file, never in code, so a vendor's renaming needs no release.
The file is validated as it is read: every rejection names the file, the entry (``model 'x'``,
``route 'y'``) and the reason, so an operator can fix a typo without reading code. Unknown fields
are errors, not silently ignored.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails

from providers.types import GenerationRequest

DEFAULT_CATALOGUE_PATH = Path(__file__).with_name("catalogue.toml")
DEFAULT_ROUTE = "default"  # the route of a job that names neither a model nor a route
PINNED_ROUTE = "pinned"  # the route recorded for a job that names a model: only that model
PREFERRED_ROUTE = "preferred"  # a job that names a model and allows fallback: that model,
# then the default route's other models
RESERVED_ROUTES = frozenset({PINNED_ROUTE, PREFERRED_ROUTE})

WireFormat = Literal["openai_images", "gemini", "bfl", "seedream", "recraft", "openai_compatible"]
Capability = Literal["svg", "text_rendering", "edit", "image_size"]
WIRE_FORMATS: frozenset[str] = frozenset(get_args(WireFormat))
CAPABILITIES: frozenset[str] = frozenset(get_args(Capability))

_SIZE = re.compile(r"[1-9][0-9]*x[1-9][0-9]*")


class CatalogueError(ValueError):
    """An unusable catalogue file; the message names the file, the entry and the reason."""

    def __init__(self, source: Path | str, entry: str, reason: str) -> None:
        super().__init__(f"{source}: {entry}: {reason}")
        self.source = str(source)
        self.entry = entry
        self.reason = reason


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    return url


def _size(size: str) -> str:
    if _SIZE.fullmatch(size) is None:
        raise ValueError('expected "WxH", such as "1024x1024"')
    return size


Text = Annotated[str, Strict(), AfterValidator(_not_blank)]
Url = Annotated[str, Strict(), AfterValidator(_http_url)]
Size = Annotated[str, Strict(), AfterValidator(_size)]
Seconds = Annotated[float, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(gt=0)]
Flag = Annotated[bool, Strict()]


class ModelSpec(BaseModel):
    """One model we can call: where and how, what it costs, what it can serve and its limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text  # our name for the model, e.g. "gpt-image-1.5"
    display_name: Text | None = None  # what an end user reads, e.g. "GPT Image 1.5"; default: id
    vendor: Text  # "openai", "google", "bfl", "byteplus", "recraft", "aggregator"
    wire_format: WireFormat
    vendor_model: Text  # the model ID on the wire
    base_url: Url
    api_key_env: Annotated[str, Strict()] = ""  # the variable holding the key; "" only if keyless
    price_per_image_usd: Annotated[float, Strict(), Field(ge=0)]
    sizes: tuple[Size, ...] = ()  # "WxH" the model accepts; empty = any within the min/max bounds
    capabilities: frozenset[Capability] = frozenset()
    baseline_latency_s: Seconds = 10.0
    timeout_s: Seconds = 120.0
    connect_timeout_s: Seconds = 5.0
    max_concurrency: Count = 8
    requests_per_minute: Count = 60
    options: dict[str, object] = Field(default_factory=dict)  # vendor parameters for the adapter
    min_width: Count = 64
    min_height: Count = 64
    max_width: Count = 4096
    max_height: Count = 4096
    max_images_per_call: Count = 1
    keyless: Flag = False  # the endpoint needs no API key (a local gateway, say)

    @model_validator(mode="after")
    def _names_its_key(self) -> Self:
        if not self.keyless and not self.api_key_env.strip():
            raise ValueError("missing field(s) ['api_key_env'] (only a model with keyless = true "
                             "may leave it out)")
        return self

    @field_serializer("capabilities", when_used="json")
    def _sorted_capabilities(self, capabilities: frozenset[str]) -> list[str]:
        return sorted(capabilities)

    @property
    def shown_name(self) -> str:
        """The model's name for end users (``display_name``, else its id)."""
        return self.display_name or self.id

    def api_key(self) -> str | None:
        return (os.environ.get(self.api_key_env) or None) if self.api_key_env else None

    @property
    def configured(self) -> bool:
        """A call can be attempted: the endpoint needs no key, or its key is set."""
        return self.keyless or self.api_key() is not None

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


class Route(BaseModel):
    """A named failover chain (its name is its key in ``Catalogue.routes``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[Text, ...] = Field(min_length=1)  # the model ids, in the order they are tried
    allow_fallback: Flag = True  # False: the first model only, never another


class Catalogue(BaseModel):
    """Every model by id and every route by name, as read from ``source``. Its routes name only
    its models, and there is a ``default`` route."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: dict[str, ModelSpec]
    routes: dict[str, Route]
    source: Path

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for model_id, model in self.models.items():
            if model.id != model_id:
                raise CatalogueError(self.source, f"model {model_id!r}", f"listed as {model.id!r}")
        for name, route in self.routes.items():
            entry = f"route {name!r}"
            if name in RESERVED_ROUTES:
                raise CatalogueError(self.source, entry,
                                     "the name is reserved for the jobs that name a model")
            for model_id in route.models:
                if model_id not in self.models:
                    raise CatalogueError(self.source, entry, f"names unknown model {model_id!r}")
        if DEFAULT_ROUTE not in self.routes:
            raise CatalogueError(self.source, "routes", f"no {DEFAULT_ROUTE!r} route (the one a "
                                 "job takes when it names neither a model nor a route)")
        return self

    def model(self, model_id: str) -> ModelSpec:
        return self.models[model_id]

    def route(self, name: str) -> Route:
        return self.routes[name]

    def shown_name(self, model_id: str) -> str:
        """A model's name for end users; the id itself for a model not (or no longer) listed."""
        model = self.models.get(model_id)
        return model.shown_name if model is not None else model_id

    def models_for(self, route: str, requested_model: str | None) -> tuple[ModelSpec, ...]:
        """The models a job walks, in order. The one rule: the workers walk these, the submit
        check refuses a job none of them can serve, and the ETA forecasts this walk.

        * ``PINNED_ROUTE`` (the job named a model): that model only; none once it has left the
          catalogue (the walk then fails the job, as no model can serve it).
        * ``PREFERRED_ROUTE`` (the job named a model and allows fallback): that model first, then
          the default route's other models in their order (the model alone when the default
          route has no ``allow_fallback``); once the model has left the catalogue, the default
          route's models by the rule below.
        * a route of the catalogue: its chain, or only its first model without ``allow_fallback``.
        * a route since removed from the catalogue (the job was accepted while it existed): the
          default route's models, by the same rule. ``requested_model`` plays no part on a route:
          it only records the chain's first model when the job was submitted.
        """
        if route == PINNED_ROUTE:
            model = self.models.get(requested_model or "")
            return () if model is None else (model,)
        if route == PREFERRED_ROUTE:
            model = self.models.get(requested_model or "")
            if model is not None:
                default = self.routes[DEFAULT_ROUTE]
                others = tuple(self.models[m] for m in default.models if m != model.id)
                return (model, *others) if default.allow_fallback else (model,)
        chain = self.routes.get(route) or self.routes[DEFAULT_ROUTE]
        models = tuple(self.models[model_id] for model_id in chain.models)
        return models if chain.allow_fallback else models[:1]


class CatalogueFile(BaseModel):
    """A catalogue file's schema: ``[[models]]`` tables and ``[routes.NAME]`` tables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelSpec] = Field(min_length=1)
    routes: dict[str, Route] = Field(default_factory=dict)


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load and validate a catalogue file (the shipped ``catalogue.toml`` when ``path`` is None)."""
    source = path or DEFAULT_CATALOGUE_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(source, "file", f"cannot read: {exc.strerror or exc}") from exc
    return parse_catalogue(text, source)


def parse_catalogue(text: str, source: Path) -> Catalogue:
    """Validate the text of a catalogue file: JSON if ``source`` ends in ``.json``, else TOML."""
    document = _document(text, source)
    try:
        parsed = CatalogueFile.model_validate(document)
    except ValidationError as exc:
        raise _rejection(exc, document, source) from None
    models: dict[str, ModelSpec] = {}
    for model in parsed.models:
        if model.id in models:
            raise CatalogueError(source, f"model {model.id!r}", "duplicate model id")
        models[model.id] = model
    try:
        return Catalogue(models=models, routes=parsed.routes, source=source)
    except ValidationError as exc:
        cause = exc.errors()[0].get("ctx", {}).get("error")
        if isinstance(cause, CatalogueError):
            raise cause from None
        raise


def save_catalogue(catalogue: Catalogue, path: Path) -> Path:
    """Write ``catalogue`` to ``path`` as a JSON catalogue file, which ``load_catalogue`` reads
    back equal. The file is replaced whole, so a process loading it never sees half of it."""
    document = CatalogueFile(models=list(catalogue.models.values()), routes=catalogue.routes)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(document.model_dump_json(indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    return path


def _document(text: str, source: Path) -> dict[str, Any]:
    if source.suffix.lower() == ".json":
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CatalogueError(source, "document", f"bad JSON syntax: {exc}") from exc
        if not isinstance(document, dict):
            raise CatalogueError(source, "document", "expected a JSON object")
        return document
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(source, "document", f"bad TOML syntax: {exc}") from exc


Location = tuple[int | str, ...]


def _rejection(exc: ValidationError, document: dict[str, Any], source: Path) -> CatalogueError:
    """The first entry the validation errors are about, with every reason given for it."""
    by_entry: dict[str, list[tuple[Location, ErrorDetails]]] = {}
    for error in exc.errors(include_url=False):
        entry, field = _entry(error["loc"], document)
        by_entry.setdefault(entry, []).append((field, error))
    entry, errors = next(iter(by_entry.items()))
    return CatalogueError(source, entry, _reasons(errors))


def _entry(loc: Location, document: dict[str, Any]) -> tuple[str, Location]:
    """The entry (``model 'x'``, ``models[3]`` when it has no id, ``route 'y'``, ``document``)
    an error location points into, and the field within it."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        raw = document["models"][loc[1]]
        model_id = raw.get("id") if isinstance(raw, dict) else None
        entry = f"model {model_id!r}" if isinstance(model_id, str) and model_id else f"models[{loc[1]}]"
        return entry, loc[2:]
    if len(loc) >= 2 and loc[0] == "routes":
        return f"route {loc[1]!r}", loc[2:]
    return "document", loc


def _reasons(errors: Sequence[tuple[Location, ErrorDetails]]) -> str:
    unknown = sorted(_field(loc) for loc, error in errors if error["type"] == "extra_forbidden")
    missing = [_field(loc) for loc, error in errors if error["type"] == "missing"]
    reasons = [f"unknown field(s) {unknown}"] if unknown else []
    if missing:
        reasons.append(f"missing field(s) {missing}")
    for loc, error in errors:
        if error["type"] in ("extra_forbidden", "missing"):
            continue
        value = error["input"]
        scalar = isinstance(value, str | int | float | bool)
        if error["type"] == "literal_error":
            message = f"unknown value {value!r} (known: {error.get('ctx', {}).get('expected')})"
        elif error["type"] in ("model_type", "dict_type"):
            message = "expected a table"
        elif error["type"] in ("list_type", "tuple_type", "frozen_set_type"):
            message = f"expected a list (got {value!r})" if scalar else "expected a list"
        elif error["type"] == "too_short":
            message = f"expected at least {error.get('ctx', {}).get('min_length')} item(s)"
        else:
            message = error["msg"].removeprefix("Value error, ")
            message += f" (got {value!r})" if scalar else ""
        field = _field(loc)
        reasons.append(f"{field}: {message}" if field else message)
    return "; ".join(reasons)


def _field(loc: Location) -> str:
    """``("sizes", 0)`` as ``sizes[0]``, ``("options", "x")`` as ``options.x``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
