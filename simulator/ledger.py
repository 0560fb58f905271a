"""The call log and per-model statistics: one row per generation request.

``concurrency_at_start`` counts the calls in flight for that model including the new one.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallRecord:
    seq: int
    vendor: str
    model: str
    prompt: str
    outcome: str
    started_at: float
    concurrency_at_start: int
    finished_at: float | None = None
    http_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "vendor": self.vendor,
            "model": self.model,
            "prompt": self.prompt,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "http_status": self.http_status,
            "concurrency_at_start": self.concurrency_at_start,
        }


@dataclass
class ModelStats:
    calls: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    peak_concurrency: int = 0
    in_flight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            "peak_concurrency": self.peak_concurrency,
            "in_flight": self.in_flight,
        }


@dataclass
class Ledger:
    """Replaced whole on reset, so calls still running from before a reset cannot skew it."""

    calls: list[CallRecord] = field(default_factory=list)
    stats: dict[str, ModelStats] = field(default_factory=dict)

    def start(self, vendor: str, model: str, prompt: str, outcome: str) -> CallRecord:
        stats = self.stats.setdefault(model, ModelStats())
        stats.calls += 1
        stats.outcomes[outcome] += 1
        stats.in_flight += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.in_flight)
        record = CallRecord(
            seq=len(self.calls) + 1,
            vendor=vendor,
            model=model,
            prompt=prompt,
            outcome=outcome,
            started_at=time.time(),
            concurrency_at_start=stats.in_flight,
        )
        self.calls.append(record)
        return record

    def finish(self, record: CallRecord, http_status: int | None) -> None:
        """Idempotent: the first finish wins (a BFL task may be finished by a timer or a cancel)."""
        if record.finished_at is not None:
            return
        record.finished_at = time.time()
        record.http_status = http_status
        self.stats[record.model].in_flight -= 1

    def rows(self, model: str | None = None, since_seq: int = 0) -> list[dict[str, Any]]:
        return [
            r.to_dict()
            for r in self.calls[since_seq:]
            if model is None or r.model == model
        ]
