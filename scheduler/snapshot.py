"""The queue snapshot as readers see it: depths, workers, running jobs, model estimates and the
ETA curve (expected start and finish by queue position). ``scheduler.publisher`` writes one a second;
the API answers every poll from the last one in O(1) — nothing on the read path simulates.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from scheduler import keys
from scheduler.eta import EtaCurve, LatencyModel, ModelEstimate, expected_service_s

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
        return self._from_now(*self.curve.at(position + since))

    def _from_now(self, start_s: float, finish_s: float) -> tuple[float, float]:
        """Times from the forecast made into times from now (the snapshot's age taken off)."""
        age = self.age_s
        return round(max(0.0, start_s - age), 2), round(max(0.0, finish_s - age), 2)

    def dispatched_eta(self, job_id: str, route: Sequence[str]
                       ) -> tuple[float | None, float | None]:
        """(start, finish) in seconds from now for a job handed to a worker that has not called
        a vendor yet: as forecast, or, dispatched since the snapshot, starting now."""
        if not self.curve.available:
            return None, None
        ids = self.data.get("dispatched", [])
        if job_id in ids and len(self.curve.dispatched_s) == len(ids):
            return self._from_now(*self.curve.dispatched_s[ids.index(job_id)])
        return 0.0, self.dispatched_finish_s(route)

    def dispatched_finish_s(self, route: Sequence[str]) -> float | None:
        """Expected finish of a job handed to a worker that has not called a vendor yet: its
        route's mean slot time (failovers weighted by each model's failure rate, the measured
        overhead). Vendor limits and a wait for a slot in the dispatch buffer are left out."""
        if not self.curve.available:
            return None
        estimates = {}
        for name in route:
            figures = self.data["models"].get(name)
            if figures is None:
                return None
            estimates[name] = ModelEstimate(
                name, LatencyModel(figures["mu"], figures["sigma"]), figures["failure_rate"],
                figures.get("failure_latency_s", 0.0))
        service_s = expected_service_s(tuple(route), estimates)
        return round(service_s + float(self.data.get("job_overhead_s", 0.0)), 2)

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
