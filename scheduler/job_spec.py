"""The one definition of a valid job. ``POST /v1/jobs`` (``JobCreate``) and every line of a batch
upload (``BATCH_LINE``: our flat shape or the OpenAI Batch envelope) are validated by the models
here and nowhere else, so the two paths cannot drift; ``api/schemas.py`` reuses ``JobCreate`` for
the OpenAPI schema.

What a valid job is:

* types are strict on both paths: ``n: "2"``, ``n: true``, ``priority: "1"`` are refused;
* every string (prompt, custom_id, model, route, webhook_url, metadata keys and values at any
  depth) is storable: no NUL character and no lone surrogate (PostgreSQL refuses the first, UTF-8
  cannot encode the second);
* ``size`` is ``WIDTHxHEIGHT`` and nothing else (no trailing newline, ASCII digits only);
* ``metadata`` is a JSON object of at most ``MAX_METADATA_KEYS`` keys, nested at most
  ``max_metadata_depth`` levels and at most ``max_metadata_bytes`` bytes as compact JSON;
* the JSON text itself names each key of an object once and has no ``NaN``/``Infinity``
  (``loads_strict``).

The limits that are settings (prompt length, images per job, metadata depth and bytes) come in the
validation context (``context(limits)``). Errors come out as ``(field, message)`` pairs
(``problems``), the field a dotted path such as ``metadata.tags.0``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduler.errors import QueueError

if TYPE_CHECKING:
    from imagequeue.settings import Settings

SIZE_PATTERN = re.compile(r"([0-9]{2,5})x([0-9]{2,5})")
MIN_SIDE_PX, MAX_SIDE_PX = 64, 4096
MAX_CUSTOM_ID_CHARS = 200
MAX_METADATA_KEYS = 32
MAX_NAME_CHARS = 100  # a model or route name
MAX_URL_CHARS = 2048
QUALITIES = ("low", "medium", "high", "auto")
PRIORITY_RANGE = (-10, 10)
OPENAI_ENVELOPE_FIELDS = frozenset({"custom_id", "method", "url", "body"})


@dataclass(frozen=True)
class JobLimits:
    max_prompt_chars: int = 4000
    max_images_per_job: int = 4
    max_metadata_depth: int = 8
    max_metadata_bytes: int = 16 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> JobLimits:
        return cls(max_prompt_chars=settings.max_prompt_chars,
                   max_images_per_job=settings.max_images_per_job,
                   max_metadata_depth=settings.max_metadata_depth,
                   max_metadata_bytes=settings.max_metadata_bytes)


def context(limits: JobLimits) -> dict[str, Any]:
    """The validation context that carries the limits to the validators."""
    return {"limits": limits}


def _limits(info: ValidationInfo) -> JobLimits:
    found = (info.context or {}).get("limits")
    return found if isinstance(found, JobLimits) else JobLimits()


class FieldProblem(ValueError):
    """A validator's refusal that names where, below the field it checks (``path``)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class InvalidFields(QueueError):
    """A request failed validation: every ``(field, message)`` found."""

    def __init__(self, problems: list[tuple[str | None, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in problems))
        self.problems = problems


# --- strings --------------------------------------------------------------------------------

def text_problem(value: str) -> str | None:
    """Why a string cannot be stored or sent on (a NUL character, a lone surrogate), or None."""
    nul = value.find("\x00")
    if nul >= 0:
        return f"contains a NUL character (\\u0000) at position {nul}; remove it"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate (\\u{ord(value[exc.start]):04x}) at position "
                f"{exc.start}, which is not valid Unicode; send a character outside the BMP as "
                f"a pair of \\uXXXX escapes")
    return None


def _storable(value: Any) -> Any:
    """Before the type check: a string must be storable (other types fail the type check)."""
    if isinstance(value, str) and (problem := text_problem(value)):
        raise ValueError(problem)
    return value


def shown(value: str, limit: int = 60) -> str:
    """``value`` safe to put in a message: escaped if it is not storable, cut if long."""
    cut = value[:limit]
    text = cut if text_problem(cut) is None and cut.isprintable() else repr(cut)[1:-1]
    return text + ("..." if len(value) > limit else "")


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError(REQUIRED["custom_id"])
    return value


Storable = BeforeValidator(_storable)
CustomId = Annotated[str, Field(max_length=MAX_CUSTOM_ID_CHARS,
                                description="Names the job in the results; unique in its batch."),
                     Storable, AfterValidator(_not_blank)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), Storable]
Url = Annotated[str, Field(max_length=MAX_URL_CHARS), Storable]


# --- size and metadata ----------------------------------------------------------------------

def parse_size(size: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (the whole string) as two sides in range; ValueError otherwise."""
    match = SIZE_PATTERN.fullmatch(size)
    if not match:
        raise ValueError(f"size must look like 1024x1024, got {size[:20]!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not all(MIN_SIDE_PX <= side <= MAX_SIDE_PX for side in (width, height)):
        raise ValueError(f"each side must be between {MIN_SIDE_PX} and {MAX_SIDE_PX} pixels")
    return width, height


def check_metadata(value: dict[str, Any], limits: JobLimits) -> None:
    """Depth, storable strings and finite numbers at every level, then the size as JSON; raises
    FieldProblem naming the path below ``metadata``."""

    def walk(node: Any, path: tuple[str | int, ...], depth: int) -> None:
        if isinstance(node, dict | list):
            if depth > limits.max_metadata_depth:
                raise FieldProblem(path, f"metadata nests deeper than "
                                         f"{limits.max_metadata_depth} levels")
            items: Iterator[tuple[str | int, Any]] = (
                iter(node.items()) if isinstance(node, dict) else enumerate(node))
            for key, child in items:
                if isinstance(key, str) and (problem := text_problem(key)):
                    raise FieldProblem((*path, key), f"the key {problem}")
                if not isinstance(key, str | int):
                    raise FieldProblem(path, "metadata keys must be strings")
                walk(child, (*path, key), depth + 1)
        elif isinstance(node, str):
            if problem := text_problem(node):
                raise FieldProblem(path, problem)
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise FieldProblem(path, "numbers must be finite (no NaN or Infinity)")
        elif node is not None and not isinstance(node, bool | int):
            raise FieldProblem(path, f"metadata holds JSON values only, not {type(node).__name__}")

    walk(value, (), 1)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > limits.max_metadata_bytes:
        raise FieldProblem((), f"metadata is {size} bytes as JSON; the limit is "
                               f"{limits.max_metadata_bytes}")


# --- the models -----------------------------------------------------------------------------

class JobSpec(BaseModel):
    """What every job is made of, on every path."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: Annotated[str, Storable] = Field(description="What to draw.",
                                             examples=["A red fox in snow, watercolor"])
    size: str = Field(default="1024x1024", description="WIDTHxHEIGHT in pixels.",
                      json_schema_extra={"pattern": f"^{SIZE_PATTERN.pattern}$"})
    n: int = Field(default=1, ge=1, description="Number of images.")
    quality: Literal["low", "medium", "high", "auto"] | None = None
    model: Name | None = Field(default=None, description="Pin one model (no fallback).")
    route: Name | None = Field(default=None,
                               description="A named route; `default` when omitted.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, max_length=MAX_METADATA_KEYS,
        description="Yours: stored with the job and returned with it, in the batch results and "
                    "in webhooks. At most 32 keys, 8 levels and 16 KiB as JSON by default.")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        limit = _limits(info).max_prompt_chars
        if len(value) > limit:
            raise ValueError(f"prompt is {len(value)} characters; the limit is {limit}")
        return value

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        if isinstance(value, str):
            parse_size(value)
        return value

    @field_validator("n")
    @classmethod
    def _n(cls, value: int, info: ValidationInfo) -> int:
        if value > _limits(info).max_images_per_job:
            raise ValueError(expected("n", _limits(info)))
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        check_metadata(value, _limits(info))
        return value

    @model_validator(mode="after")
    def _model_or_route(self) -> JobSpec:
        if self.model is not None and self.route is not None:
            raise FieldProblem(("model",), "give either model (pinned) or route, not both")
        return self

    @property
    def dimensions(self) -> tuple[int, int]:
        return parse_size(self.size)


class JobCreate(JobSpec):
    """The body of ``POST /v1/jobs``."""

    priority: int = Field(default=0, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1],
                          description="Higher runs earlier in its lane.")
    webhook_url: Url | None = Field(default=None,
                                    description="POSTed (signed) when the job ends.")


class BatchJob(JobSpec):
    """A batch line in our flat shape."""

    custom_id: CustomId


class OpenAIBatchRequest(BaseModel):
    """A batch line in the OpenAI Batch shape: the job is its ``body``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    custom_id: CustomId
    method: Annotated[str, Field(max_length=16)] | None = None
    url: Annotated[str, Field(max_length=200)] | None = None
    body: JobSpec


def _shape(value: Any) -> str:
    """The OpenAI envelope carries the job in ``body``; our flat shape is the job itself."""
    if isinstance(value, dict) and "body" in value and set(value) <= OPENAI_ENVELOPE_FIELDS:
        return "openai"
    return "flat"


BatchLine = Annotated[
    Union[Annotated[BatchJob, Tag("flat")], Annotated[OpenAIBatchRequest, Tag("openai")]],  # noqa: UP007
    Discriminator(_shape)]
BATCH_LINE: TypeAdapter[BatchJob | OpenAIBatchRequest] = TypeAdapter(BatchLine)
JOB_CREATE: TypeAdapter[JobCreate] = TypeAdapter(JobCreate)
SHAPE_TAGS = ("flat", "openai")


def validate_job(obj: Any, limits: JobLimits) -> JobCreate:
    """A ``POST /v1/jobs`` body; raises InvalidFields with every problem found."""
    try:
        return JOB_CREATE.validate_python(obj, context=context(limits))
    except ValidationError as exc:
        raise InvalidFields(problems(exc, limits)) from None


def validate_batch_line(obj: Any, limits: JobLimits) -> tuple[str, JobSpec]:
    """(custom_id, the job) of one batch line; raises InvalidFields with every problem found."""
    try:
        line = BATCH_LINE.validate_python(obj, context=context(limits))
    except ValidationError as exc:
        raise InvalidFields(problems(exc, limits, tagged=True)) from None
    if isinstance(line, OpenAIBatchRequest):
        return line.custom_id, line.body
    return line.custom_id, line


# --- errors as the user reads them ----------------------------------------------------------

REQUIRED = {
    "prompt": "prompt is required and must not be empty",
    "custom_id": "custom_id is required: a non-empty string naming this job",
}


def expected(name: str, limits: JobLimits) -> str:
    """What a field must be, for a value of the wrong type or out of range."""
    return {
        "prompt": "prompt must be a non-empty string",
        "custom_id": "custom_id is required: a non-empty string naming this job",
        "size": "size must be a string like 1024x1024",
        "n": f"n must be an integer between 1 and {limits.max_images_per_job}",
        "priority": f"priority must be an integer between {PRIORITY_RANGE[0]} and "
                    f"{PRIORITY_RANGE[1]}",
        "quality": f"quality must be one of {', '.join(QUALITIES)}",
        "model": "model must be a model name (a string)",
        "route": "route must be a route name (a string)",
        "webhook_url": "webhook_url must be a URL (a string)",
        "metadata": f"metadata must be a JSON object of at most {MAX_METADATA_KEYS} keys",
        "body": "body must be a JSON object holding the job",
        "method": "method must be a string",
        "url": "url must be a string",
    }.get(name, "")


def field_label(path: tuple[Any, ...] | list[Any]) -> str | None:
    return ".".join(str(p) if isinstance(p, int) or text_problem(str(p)) is None
                    else shown(str(p)) for p in path) or None


def problems(exc: ValidationError, limits: JobLimits,
             tagged: bool = False) -> list[tuple[str | None, str]]:
    """Every error of a validation, as (dotted field path, readable message); ``tagged``: the
    errors of BATCH_LINE, whose paths start with the line's shape (not a field)."""
    found: list[tuple[str | None, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        if tagged and loc and loc[0] in SHAPE_TAGS:
            loc = loc[1:]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            loc += list(cause.path)
        kind = error["type"]
        name = str(loc[-1]) if loc else ""
        in_metadata = "metadata" in loc[:-1]
        if isinstance(cause, FieldProblem):
            message = cause.message
        elif kind == "value_error":
            message = str(error["msg"]).removeprefix("Value error, ")
        elif kind == "extra_forbidden":
            message = "unknown field"
        elif kind == "missing":
            message = REQUIRED.get(name, f"{name} is required")
        elif kind == "string_too_long":
            message = f"{name} is longer than {error['ctx']['max_length']} characters"
        elif kind == "too_long" and name == "metadata":
            message = f"metadata may have at most {MAX_METADATA_KEYS} keys"
        elif not in_metadata and expected(name, limits):
            message = expected(name, limits)
        else:
            message = str(error["msg"])
        found.append((field_label(loc), message))
    return found


# --- JSON text ------------------------------------------------------------------------------

class JsonProblem(ValueError):
    """JSON that parses but that we refuse (a key twice, NaN), or that is too deep to parse."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class _Duplicated(dict[str, Any]):
    """An object that named a key more than once (only built on that error path)."""

    duplicate: str = ""


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses a key named twice in one object (naming its path), ``NaN``
    and ``Infinity``, numbers too long to convert, and nesting too deep to parse, with
    JsonProblem; malformed JSON is still ``json.JSONDecodeError``."""
    duplicated = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicated
        obj = dict(items)
        if len(obj) == len(items):
            return obj
        duplicated = True
        marked = _Duplicated(obj)
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                marked.duplicate = key
                break
            seen.add(key)
        return marked

    def constant(name: str) -> Any:
        raise JsonProblem(None, f"{name} is not a JSON number")

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:
        raise JsonProblem(None, "the JSON nests too deeply to be read") from None
    except (json.JSONDecodeError, JsonProblem):
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise JsonProblem(None, f"a value cannot be read: {exc}") from None
    if duplicated:
        path, key = _first_duplicate(value)
        raise JsonProblem(field_label([*path, key]),
                          f"the key {key[:60]!r} appears more than once in one object")
    return value


def _first_duplicate(value: Any) -> tuple[list[str | int], str]:
    """Where the first object with a repeated key is (iterative: the value may be deep)."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _Duplicated):
            return path, node.duplicate
        children = (node.items() if isinstance(node, dict)
                    else enumerate(node) if isinstance(node, list) else ())
        stack.extend((child, [*path, key]) for key, child in reversed(list(children)))
    return [], ""  # pragma: no cover - only called when one was marked
