"""Reading a batch upload: one job per JSONL line, each checked on its own, with its line number.

A line is either our flat shape ``{"custom_id", "prompt", "size", "n", "quality", "model" |
"route", "metadata"}`` or the OpenAI Batch shape ``{"custom_id", "method", "url", "body": {...}}``
whose ``body`` holds those fields. Blank lines are skipped; line numbers count every line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from scheduler.errors import QueueError

SIZE_PATTERN = re.compile(r"^(\d{2,5})x(\d{2,5})$")
MIN_SIDE_PX, MAX_SIDE_PX = 64, 4096
MAX_CUSTOM_ID_CHARS = 200
MAX_METADATA_KEYS = 32
QUALITIES = ("low", "medium", "high", "auto")
JOB_FIELDS = frozenset({"custom_id", "prompt", "size", "n", "quality", "model", "route",
                        "metadata"})
OPENAI_ENVELOPE_FIELDS = frozenset({"custom_id", "method", "url", "body"})


@dataclass(frozen=True)
class BatchLimits:
    max_lines: int = 50_000
    max_prompt_chars: int = 4000
    max_images_per_job: int = 4


@dataclass(frozen=True)
class LineError:
    line: int
    field: str | None
    message: str
    custom_id: str | None = None


@dataclass(frozen=True)
class JobLine:
    """One valid line, before its route is resolved against the catalogue."""

    line: int
    custom_id: str
    prompt: str
    width: int = 1024
    height: int = 1024
    n: int = 1
    quality: str | None = None
    model: str | None = None
    route: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class TooManyLines(QueueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the batch has more than {limit} lines (line {limit + 1} is over the "
                         f"limit); split it into several batches")
        self.limit = limit
        self.line = limit + 1


def parse_size(size: str) -> tuple[int, int]:
    match = SIZE_PATTERN.match(size)
    if not match:
        raise ValueError(f"size must look like 1024x1024, got {size!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if not all(MIN_SIDE_PX <= side <= MAX_SIDE_PX for side in (width, height)):
        raise ValueError(f"each side must be between {MIN_SIDE_PX} and {MAX_SIDE_PX} pixels")
    return width, height


def numbered_lines(source: IO[bytes], max_lines: int) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every non-blank line; raises TooManyLines past the limit."""
    counted = 0
    for number, raw in enumerate(source, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark
        if not raw.strip():
            continue
        counted += 1
        if counted > max_lines:
            raise TooManyLines(max_lines)
        yield number, raw


def parse_line(number: int, raw: bytes, limits: BatchLimits) -> JobLine | list[LineError]:
    """Check one line: a JobLine when it is valid, else every reason it is not."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return [LineError(number, None, f"not valid UTF-8: byte 0x{raw[exc.start]:02x} "
                                        f"at column {exc.start + 1}")]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return [LineError(number, None, f"not valid JSON: {exc.msg} at column {exc.colno}")]
    if not isinstance(obj, dict):
        return [LineError(number, None,
                          f"each line must be a JSON object, got {type(obj).__name__}")]
    return _check_fields(number, _unwrap(obj), limits)


def _unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI Batch envelope carries the job in ``body``; our flat shape is the job itself."""
    if isinstance(obj.get("body"), dict) and set(obj) <= OPENAI_ENVELOPE_FIELDS:
        return {**obj["body"], "custom_id": obj.get("custom_id")}
    return obj


def _check_fields(number: int, obj: dict[str, Any], limits: BatchLimits) -> JobLine | list[LineError]:
    errors: list[LineError] = []

    def bad(field_name: str | None, message: str) -> None:
        custom = obj.get("custom_id")
        errors.append(LineError(number, field_name, message,
                                custom if isinstance(custom, str) else None))

    for unknown in sorted(set(obj) - JOB_FIELDS):
        bad(unknown, "unknown field")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id.strip():
        bad("custom_id", "custom_id is required: a non-empty string naming this job")
    elif len(custom_id) > MAX_CUSTOM_ID_CHARS:
        bad("custom_id", f"custom_id is longer than {MAX_CUSTOM_ID_CHARS} characters")
    prompt = obj.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        bad("prompt", "prompt is required and must not be empty")
    elif len(prompt) > limits.max_prompt_chars:
        bad("prompt", f"prompt is {len(prompt)} characters; the limit is "
                      f"{limits.max_prompt_chars}")
    width, height = 1024, 1024
    size = obj.get("size", "1024x1024")
    try:
        if not isinstance(size, str):
            raise ValueError("size must be a string like 1024x1024")
        width, height = parse_size(size)
    except ValueError as exc:
        bad("size", str(exc))
    n = obj.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limits.max_images_per_job:
        bad("n", f"n must be an integer between 1 and {limits.max_images_per_job}")
    quality = obj.get("quality")
    if quality is not None and quality not in QUALITIES:
        bad("quality", f"quality must be one of {', '.join(QUALITIES)}")
    model, route = obj.get("model"), obj.get("route")
    for name, value in (("model", model), ("route", route)):
        if value is not None and not isinstance(value, str):
            bad(name, f"{name} must be a string")
    if model is not None and route is not None:
        bad("model", "give either model (pinned) or route, not both")
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_KEYS:
        bad("metadata", f"metadata must be an object of at most {MAX_METADATA_KEYS} keys")
    if errors:
        return errors
    assert isinstance(custom_id, str) and isinstance(prompt, str)
    return JobLine(line=number, custom_id=custom_id, prompt=prompt, width=width, height=height,
                   n=n, quality=quality, model=model, route=route, metadata=metadata)
