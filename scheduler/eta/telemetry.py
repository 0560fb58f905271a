"""What workers tell the scheduler while they run jobs, for queue snapshots and ETAs.

Running jobs (which model each is trying, since when) and recent attempt latencies per model live
in Redis under keys named in ``imagequeue.keys``. Losing them costs ETA accuracy, never a job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis

from imagequeue import keys

LATENCY_SAMPLES = 1000
"""Latencies kept per model. A burst's ETA inherits the fitted median's error whole: from the last
1000 calls it is known to some 1.1 % (sigma 0.35 / sqrt(1000)), from 200 to 2.5 %, which alone
decided whether a 5 % goal was met. The cost is a slower answer to a latency that drifts (half
the fit is new after 500 calls: minutes for a busy model). The list is also where the forecast
counts the calls that hold a vendor's rate budget."""
WALK_SAMPLES = 1000


@dataclass(frozen=True)
class RunningInfo:
    job_id: str
    route: tuple[str, ...]
    model_index: int
    job_started_s: float
    attempt_started_s: float
    walk_ended_s: float | None = None
    """Set once the job's walk is over (it is storing its images, or parking): no call is left."""
    waiting_for: str | None = None
    """Why the job waits before calling its model (its slow-start gate is shut), in words."""

    @property
    def model(self) -> str:
        return self.route[self.model_index]

    @property
    def walking(self) -> bool:
        return self.walk_ended_s is None


class LatencySample(NamedTuple):
    """One finished call (a tuple: a snapshot reads thousands of them)."""

    ok: bool
    latency_s: float
    at_s: float


def mark_attempt(client: redis.Redis, job_id: str, route: tuple[str, ...], model_index: int,
                 job_started_s: float, waiting_for: str | None = None) -> None:
    """The job is trying ``route[model_index]`` (or, ``waiting_for`` in words, waits to)."""
    client.hset(keys.RUNNING, job_id,
                _running_entry(route, model_index, job_started_s, time.time(),
                               waiting_for=waiting_for))


def _running_entry(route: tuple[str, ...], model_index: int, job_started_s: float,
                   attempt_started_s: float, walk_ended_s: float | None = None,
                   waiting_for: str | None = None) -> str:
    info: dict[str, Any] = {"route": list(route), "model_index": model_index,
                            "job_started_s": job_started_s,
                            "attempt_started_s": attempt_started_s}
    if walk_ended_s is not None:
        info["walk_ended_s"] = walk_ended_s
    if waiting_for is not None:
        info["waiting_for"] = waiting_for
    return json.dumps(info)


def record_latency(client: redis.Redis, model: str, ok: bool, latency_s: float) -> None:
    pipe = client.pipeline(transaction=False)  # a sample, not a unit: no MULTI/EXEC
    pipe.lpush(keys.latency(model), f"{int(ok)}:{latency_s:.4f}:{time.time():.3f}")
    pipe.ltrim(keys.latency(model), 0, LATENCY_SAMPLES - 1)
    pipe.execute()


@dataclass(frozen=True)
class RouteWalk:
    """One job's walk along its route (admission waits, every attempt) that ended at ``at_s``."""

    duration_s: float
    at_s: float


def record_walk(client: redis.Redis, job_id: str, route: tuple[str, ...], model_index: int,
                job_started_s: float, attempt_started_s: float) -> None:
    """The job's walk is over: its length for the slot overhead, and its running entry says so."""
    now_s = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.lpush(keys.WALKS, f"{now_s - job_started_s:.4f}:{now_s:.3f}")
    pipe.ltrim(keys.WALKS, 0, WALK_SAMPLES - 1)
    pipe.hset(keys.RUNNING, job_id,
              _running_entry(route, model_index, job_started_s, attempt_started_s, now_s))
    pipe.execute()


def route_walks(client: redis.Redis) -> list[RouteWalk]:
    """Recent walks, newest first."""
    found = []
    for row in client.lrange(keys.WALKS, 0, -1):
        duration_s, at_s = (row.decode() if isinstance(row, bytes) else row).split(":")
        found.append(RouteWalk(float(duration_s), float(at_s)))
    return found


def running_jobs(client: redis.Redis) -> list[RunningInfo]:
    found = []
    for job_id, raw in client.hgetall(keys.RUNNING).items():
        found.append(_running_info(job_id.decode() if isinstance(job_id, bytes) else job_id,
                                   json.loads(raw)))
    return found


def running_job(client: redis.Redis, job_id: str) -> RunningInfo | None:
    raw = client.hget(keys.RUNNING, job_id)
    return None if raw is None else _running_info(job_id, json.loads(raw))


def _running_info(job_id: str, info: dict[str, Any]) -> RunningInfo:
    ended = info.get("walk_ended_s")
    return RunningInfo(job_id, tuple(info["route"]), int(info["model_index"]),
                       float(info["job_started_s"]), float(info["attempt_started_s"]),
                       None if ended is None else float(ended), info.get("waiting_for"))


def latency_samples(client: redis.Redis, models: list[str]) -> dict[str, list[LatencySample]]:
    pipe = client.pipeline()
    for model in models:
        pipe.lrange(keys.latency(model), 0, -1)
    samples: dict[str, list[LatencySample]] = {}
    for model, rows in zip(models, pipe.execute(), strict=True):
        parsed = []
        for row in rows:
            ok, latency_s, at_s = (row.decode() if isinstance(row, bytes) else row).split(":")
            parsed.append(LatencySample(ok == "1", float(latency_s), float(at_s)))
        samples[model] = parsed
    return samples
