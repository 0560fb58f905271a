"""Worker heartbeats: each worker advertises its concurrency; the dispatcher sums the live ones."""

from __future__ import annotations

import json
import time

import redis

from imagequeue import keys


def heartbeat(client: redis.Redis, worker: str, concurrency: int, ttl_s: float) -> None:
    expires_at_ms = int((time.time() + ttl_s) * 1000)
    client.hset(keys.WORKERS, worker,
                json.dumps({"concurrency": concurrency, "expires_at_ms": expires_at_ms}))


def forget(client: redis.Redis, worker: str) -> None:
    client.hdel(keys.WORKERS, worker)


def live_workers(client: redis.Redis) -> dict[str, int]:
    """Workers whose heartbeat has not expired, with their concurrency; prunes the dead ones."""
    now_ms = int(time.time() * 1000)
    alive: dict[str, int] = {}
    dead: list[str] = []
    for name, raw in client.hgetall(keys.WORKERS).items():
        info = json.loads(raw)
        worker = name.decode() if isinstance(name, bytes) else str(name)
        if info["expires_at_ms"] >= now_ms:
            alive[worker] = int(info["concurrency"])
        else:
            dead.append(worker)
    if dead:
        client.hdel(keys.WORKERS, *dead)
    return alive
