"""The plain data every adapter takes and returns: a request, its images, and an asynchronous
vendor task. No imports of our own, so the catalogue and the adapters both build on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    width: int = 1024
    height: int = 1024
    n: int = 1
    quality: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    vector: bool | None = None  # True: SVG only; False: raster only; None: either will do


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str  # "image/png", "image/jpeg", "image/svg+xml"
    width: int
    height: int


@dataclass(frozen=True)
class GenerationResult:
    images: list[GeneratedImage]
    request_id: str | None = None
    cost_usd: float = 0.0
    vendor_cost: float | None = None  # the vendor's own unit (BFL credits, Recraft units)


@dataclass(frozen=True)
class VendorTask:
    """An asynchronous vendor task already submitted (and paid for): enough to poll it again
    after a crash instead of submitting, and paying, a second time."""

    task_id: str | None
    polling_url: str


def _ignore_task(_task: VendorTask) -> None:
    return None


@dataclass(frozen=True)
class TaskHooks:
    """How a caller follows an asynchronous call: ``submitted`` learns the task the moment the
    vendor returns it; ``resume`` (a task of an earlier run) is polled instead of submitting."""

    resume: VendorTask | None = None
    submitted: Callable[[VendorTask], None] = _ignore_task
