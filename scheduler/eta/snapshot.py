"""The queue snapshot as readers see it: depths, workers, running jobs, model estimates and the
ETA curve (expected start and finish by queue position). ``scheduler.eta.publisher`` writes one a second;
the API answers every poll from the last one in O(1) — nothing on the read path simulates.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from imagequeue import keys
from scheduler.eta.forecast import EtaCurve, LatencyModel


@dataclass(frozen=True)
class Snapshot:
    as_of_s: float
    curve: EtaCurve
    depth: dict[str, int]
    data: dict[str, Any]

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.as_of_s)

    def eta(self, position: int, dispatch_count: int | None = None
            ) -> tuple[float | None, float | None]:
        """(start, finish) in seconds from now for the job at ``position`` now; None when no
        worker is alive. Jobs dispatched since the snapshot (``dispatch_count`` now, less the
        snapshot's) had been ahead of it then: the curve is read where the job stood, and the
        snapshot's age taken off."""
        if not self.curve.available:
            return None, None
        return self._from_now(*self.curve.at(position + self._dispatched_since(dispatch_count)))

    def dispatched_eta(self, job_id: str, dispatch_count: int | None = None
                       ) -> tuple[float | None, float | None]:
        """(start, finish) in seconds from now for a job handed to a worker that has not called
        a vendor yet: as forecast, or, dispatched since the snapshot, from where it stood then.

        Such a job was one of the jobs dispatched since, which were all ahead of the queue that
        remains; it is taken as the last of them. A job that found the queue empty reads
        position 0: the next free slot and the service the forecast gives the next job, vendor
        limits included (with the first model's rate budget spent, most jobs take a faster or
        slower second model, which the route's plain mean would not know)."""
        if not self.curve.available:
            return None, None
        ids = self.data.get("dispatched", [])
        if job_id in ids and len(self.curve.dispatched_s) == len(ids):
            return self._from_now(*self.curve.dispatched_s[ids.index(job_id)])
        return self._from_now(*self.curve.at(max(0, self._dispatched_since(dispatch_count) - 1)))

    def _dispatched_since(self, dispatch_count: int | None) -> int:
        if dispatch_count is None:
            return 0
        return max(0, dispatch_count - int(self.data.get("dispatch_count", dispatch_count)))

    def _from_now(self, start_s: float, finish_s: float) -> tuple[float, float]:
        """Times from the forecast made into times from now (the snapshot's age taken off)."""
        age = self.age_s
        return round(max(0.0, start_s - age), 2), round(max(0.0, finish_s - age), 2)

    def model_remaining_s(self, model: str, elapsed_s: float) -> float | None:
        estimate = self.data["models"].get(model)
        if estimate is None:
            return None
        latency = LatencyModel(estimate["mu"], estimate["sigma"])
        return round(latency.remaining_mean_s(elapsed_s), 2)


def read_snapshot(client: redis.Redis) -> Snapshot | None:
    raw = client.get(keys.SNAPSHOT)
    if raw is None:
        return None
    data = json.loads(raw)
    return Snapshot(data["as_of_s"], EtaCurve.from_dict(data["curve"]), data["depth"], data)


class SnapshotCache:
    """The published snapshot, read from Redis and parsed once per publication rather than once
    per request: ``announce`` (the process's one subscription to ``keys.SNAPSHOT_CHANNEL``) marks
    the held copy old. While nobody listens, or no publication came for ``max_age_s``, ``read``
    reads Redis again as ``read_snapshot`` does."""

    def __init__(self, client: redis.Redis, max_age_s: float = 2.0) -> None:
        self.client = client
        self.max_age_s = max_age_s
        self.listening = False  # set by the subscription while it holds
        self.heard = 0  # publications announced
        self._held: tuple[int, float, Snapshot | None] | None = None  # (heard, read at, copy)

    def announce(self) -> None:
        self.heard += 1

    def read(self) -> Snapshot | None:
        heard, now = self.heard, time.monotonic()
        held = self._held
        if (self.listening and held is not None and held[0] == heard
                and now - held[1] < self.max_age_s):
            return held[2]
        snap = read_snapshot(self.client)  # read after ``heard`` was taken: never older than it
        self._held = (heard, now, snap)
        return snap
