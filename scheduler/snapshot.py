"""The queue snapshot as readers see it: depths, workers, running jobs, model estimates and the
ETA curve (expected start and finish by queue position). ``scheduler.publisher`` writes one a second;
the API answers every poll from the last one in O(1) — nothing on the read path simulates.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from scheduler import keys
from scheduler.eta import EtaCurve, LatencyModel

SNAPSHOT_CHANNEL = f"{keys.PREFIX}:snapshots"

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
        since = 0
        if dispatch_count is not None:
            since = max(0, dispatch_count - int(self.data.get("dispatch_count", dispatch_count)))
        start, finish = self.curve.at(position + since)
        age = self.age_s
        return round(max(0.0, start - age), 1), round(max(0.0, finish - age), 1)

    def model_remaining_s(self, model: str, elapsed_s: float) -> float | None:
        estimate = self.data["models"].get(model)
        if estimate is None:
            return None
        latency = LatencyModel(estimate["mu"], estimate["sigma"])
        return round(latency.remaining_mean_s(elapsed_s), 1)


def read_snapshot(client: redis.Redis) -> Snapshot | None:
    raw = client.get(keys.SNAPSHOT)
    if raw is None:
        return None
    data = json.loads(raw)
    return Snapshot(data["as_of_s"], EtaCurve.from_dict(data["curve"]), data["depth"], data)
