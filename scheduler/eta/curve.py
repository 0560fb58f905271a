"""The published ETA curve: expected start and finish (seconds from the forecast) by queue position.

The scheduler computes one curve a second and publishes ``to_dict()``; the API reads it back with
``from_dict()`` and answers any position in O(1): a table lookup for the first positions, a straight
line (slope ``mean_service_s / slots``) beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CURVE_FORMAT_VERSION", "EtaCurve"]

CURVE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class EtaCurve:
    """Expected (start_s, finish_s) per position; position 0 is the next job to start.

    With ``slots == 0`` (no live worker) nothing will start: every position reads
    ``(math.inf, math.inf)`` and ``available`` is False, so callers show "no workers" rather than
    a number.
    """

    slots: int
    mean_service_s: float
    start_s: tuple[float, ...]
    finish_s: tuple[float, ...]
    queue_depth: int | None = None
    dispatched_s: tuple[tuple[float, float], ...] = ()
    """(start_s, finish_s) of the jobs handed to workers and not calling a vendor yet, in
    dispatch order (they are ahead of position 0)."""

    def __post_init__(self) -> None:
        if self.slots < 0:
            raise ValueError(f"slots must be >= 0, got {self.slots}")
        if len(self.start_s) != len(self.finish_s):
            raise ValueError("start_s and finish_s must have the same length")
        if self.slots > 0 and not self.start_s:
            raise ValueError("a curve with slots needs at least one exact position")

    @property
    def available(self) -> bool:
        return self.slots > 0

    @property
    def exact_positions(self) -> int:
        return len(self.start_s)

    @property
    def seconds_per_position(self) -> float:
        """Slope of the extrapolated tail: one job leaves the queue every this many seconds."""
        return self.mean_service_s / self.slots if self.slots else math.inf

    def at(self, position: int) -> tuple[float, float]:
        """Expected (start_s, finish_s) of the job at ``position``, seconds from the forecast."""
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        if not self.available:
            return math.inf, math.inf
        if position < len(self.start_s):
            return self.start_s[position], self.finish_s[position]
        last = len(self.start_s) - 1
        start_s = self.start_s[last] + (position - last) * self.seconds_per_position
        return start_s, start_s + self.mean_service_s

    def for_new_job(self) -> tuple[float, float]:
        """ETA of a job submitted now: it joins at position ``queue_depth``."""
        if self.queue_depth is None:
            raise ValueError("queue_depth is unknown for this curve")
        return self.at(self.queue_depth)

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-friendly form (strict JSON: no infinities, times in milliseconds)."""
        return {
            "v": CURVE_FORMAT_VERSION,
            "slots": self.slots,
            "mean_service_s": self.mean_service_s,
            "queue_depth": self.queue_depth,
            "start_ms": [_to_ms(s) for s in self.start_s],
            "finish_ms": [_to_ms(s) for s in self.finish_s],
            "dispatched_ms": [[_to_ms(s), _to_ms(f)] for s, f in self.dispatched_s],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EtaCurve:
        version = data.get("v")
        if version != CURVE_FORMAT_VERSION:
            raise ValueError(f"unsupported ETA curve format {version!r}")
        depth = data.get("queue_depth")
        return cls(
            slots=int(data["slots"]),
            mean_service_s=float(data["mean_service_s"]),
            start_s=tuple(ms / 1000.0 for ms in data["start_ms"]),
            finish_s=tuple(ms / 1000.0 for ms in data["finish_ms"]),
            queue_depth=None if depth is None else int(depth),
            dispatched_s=tuple((s / 1000.0, f / 1000.0) for s, f in data.get("dispatched_ms", [])),
        )


def _to_ms(seconds: float) -> int:
    return round(seconds * 1000.0)
