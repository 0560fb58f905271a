"""What workers tell the scheduler while they run jobs, for queue snapshots and ETAs.

Running jobs (which model each is trying, since when) and recent attempt latencies per model live
in Redis under keys named in ``scheduler.keys``. Losing them costs ETA accuracy, never a job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

from scheduler import keys

LATENCY_SAMPLES = 200
WALK_SAMPLES = 1000


@dataclass(frozen=True)
class RunningInfo:
    job_id: str
    route: tuple[str, ...]
    model_index: int
    job_started_s: float
    attempt_started_s: float

    @property
    def model(self) -> str:
        return self.route[self.model_index]


@dataclass(frozen=True)
class LatencySample:
    ok: bool
    latency_s: float
    at_s: float


def mark_attempt(client: redis.Redis, job_id: str, route: tuple[str, ...], model_index: int,
                 job_started_s: float) -> None:
    info = {"route": list(route), "model_index": model_index, "job_started_s": job_started_s,
            "attempt_started_s": time.time()}
    client.hset(keys.RUNNING, job_id, json.dumps(info))


def record_latency(client: redis.Redis, model: str, ok: bool, latency_s: float) -> None:
    pipe = client.pipeline()
    pipe.lpush(keys.latency(model), f"{int(ok)}:{latency_s:.4f}:{time.time():.3f}")
    pipe.ltrim(keys.latency(model), 0, LATENCY_SAMPLES - 1)
    pipe.execute()


@dataclass(frozen=True)
class RouteWalk:
    """One job's walk along its route (admission waits, every attempt) that ended at ``at_s``."""

    duration_s: float
    at_s: float


def record_walk(client: redis.Redis, duration_s: float) -> None:
    pipe = client.pipeline()
    pipe.lpush(keys.WALKS, f"{duration_s:.4f}:{time.time():.3f}")
    pipe.ltrim(keys.WALKS, 0, WALK_SAMPLES - 1)
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
        info = json.loads(raw)
        found.append(RunningInfo(job_id.decode() if isinstance(job_id, bytes) else job_id,
                                 tuple(info["route"]), int(info["model_index"]),
                                 float(info["job_started_s"]), float(info["attempt_started_s"])))
    return found


def running_job(client: redis.Redis, job_id: str) -> RunningInfo | None:
    raw = client.hget(keys.RUNNING, job_id)
    if raw is None:
        return None
    info = json.loads(raw)
    return RunningInfo(job_id, tuple(info["route"]), int(info["model_index"]),
                       float(info["job_started_s"]), float(info["attempt_started_s"]))


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
