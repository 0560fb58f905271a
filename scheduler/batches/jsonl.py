"""Reading a batch upload: one job per JSONL line, each checked on its own, with its line number.

A line is either our flat shape ``{"custom_id", "prompt", "size", "n", "quality", "model" |
"route", "metadata"}`` or the OpenAI Batch shape ``{"custom_id", "method", "url", "body": {...}}``
whose ``body`` holds those fields; both are validated by ``scheduler.job_spec`` (the same models
as ``POST /v1/jobs``). Blank lines are skipped; line numbers count every line. Nothing about a
line raises: whatever keeps it from being read (bad UTF-8, bad JSON, a key twice, nesting too
deep, a number too long) is that line's error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, TYPE_CHECKING, Any

from scheduler.errors import QueueError
from scheduler.job_spec import (
    MAX_CUSTOM_ID_CHARS,
    InvalidFields,
    JobLimits,
    JsonProblem,
    loads_strict,
    text_problem,
    validate_batch_line,
)

if TYPE_CHECKING:
    from imagequeue.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchLimits(JobLimits):
    max_lines: int = 50_000

    @classmethod
    def from_settings(cls, settings: Settings) -> BatchLimits:
        job = JobLimits.from_settings(settings)
        return cls(max_lines=settings.max_batch_lines, **asdict(job))


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
    """Check one line: a JobLine when it is valid, else every reason it is not. Never raises."""
    try:
        return _parse_line(number, raw, limits)
    except Exception as exc:  # noqa: BLE001 - a line we cannot read is that line's error
        log.warning("batch line %d could not be read", number, exc_info=True)
        return [LineError(number, None, f"this line could not be read ({type(exc).__name__})")]


def _parse_line(number: int, raw: bytes, limits: BatchLimits) -> JobLine | list[LineError]:
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        return [LineError(number, None, f"not valid UTF-8: byte 0x{raw[exc.start]:02x} "
                                        f"at column {exc.start + 1}")]
    try:
        obj = loads_strict(text)
    except json.JSONDecodeError as exc:
        return [LineError(number, None, f"not valid JSON: {exc.msg} at column {exc.colno}")]
    except JsonProblem as exc:
        return [LineError(number, exc.field, exc.message)]
    if not isinstance(obj, dict):
        return [LineError(number, None,
                          f"each line must be a JSON object, got {type(obj).__name__}")]
    try:
        custom_id, job = validate_batch_line(obj, limits)
    except InvalidFields as exc:
        custom = obj.get("custom_id")
        named = custom if isinstance(custom, str) and _echoable(custom) else None
        return [LineError(number, f, m, named) for f, m in exc.problems]
    width, height = job.dimensions
    return JobLine(line=number, custom_id=custom_id, prompt=job.prompt, width=width,
                   height=height, n=job.n, quality=job.quality, model=job.model, route=job.route,
                   metadata=job.metadata)


def _echoable(custom_id: str) -> bool:
    """A custom_id the rejects may repeat as given (the response must be able to hold it)."""
    return len(custom_id) <= MAX_CUSTOM_ID_CHARS and text_problem(custom_id) is None
