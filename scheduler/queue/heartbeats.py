"""Worker heartbeats: each worker advertises who it is and its concurrency; the dispatcher sums
the slots of the live ones, ``/v1/status`` and ``imgq workers`` list them.

A record is one JSON value per worker in ``keys.WORKERS``. Fields beyond ``concurrency`` and
``expires_at_ms`` are optional on reading: during a rolling upgrade older workers still write
the short form, and a reader must take it (their identity then shows as unknown).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import redis

from imagequeue import keys

log = logging.getLogger(__name__)


def package_version() -> str:
    try:
        return version("imagequeue")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a worker process is; ``holder`` is its name on the job leases (``host:pid``)."""

    host: str
    pid: int
    version: str
    started_at_ms: int
    holder: str

    @classmethod
    def of_this_process(cls, holder: str) -> WorkerIdentity:
        return cls(socket.gethostname(), os.getpid(), package_version(),
                   int(time.time() * 1000), holder)


@dataclass(frozen=True)
class WorkerBeat:
    """One worker's last heartbeat. ``draining``: it is shutting down and takes no new job."""

    name: str
    concurrency: int
    expires_at_ms: int
    host: str | None = None
    pid: int | None = None
    version: str | None = None
    started_at_ms: int | None = None
    beat_at_ms: int | None = None
    holder: str | None = None
    draining: bool = False

    @property
    def slots(self) -> int:
        """What the dispatcher may count on: nothing from a worker that is shutting down."""
        return 0 if self.draining else self.concurrency

    @classmethod
    def parse(cls, name: str, raw: bytes | str) -> WorkerBeat | None:
        """The record, or None if it cannot be read at all (then it counts as dead)."""
        try:
            info = json.loads(raw)
            return cls(name=name, concurrency=int(info["concurrency"]),
                       expires_at_ms=int(info["expires_at_ms"]),
                       host=_optional(info, "host", str), pid=_optional(info, "pid", int),
                       version=_optional(info, "version", str),
                       started_at_ms=_optional(info, "started_at_ms", int),
                       beat_at_ms=_optional(info, "beat_at_ms", int),
                       holder=_optional(info, "holder", str),
                       draining=bool(info.get("draining", False)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("worker heartbeat %r cannot be read (%s); ignoring it", name, exc)
            return None


def _optional(info: Mapping[str, Any], field: str, kind: type) -> Any:
    value = info.get(field)
    return None if value is None else kind(value)


def heartbeat(client: redis.Redis, worker: str, concurrency: int, ttl_s: float,
              identity: WorkerIdentity | None = None, *, draining: bool = False) -> None:
    now_ms = int(time.time() * 1000)
    record: dict[str, Any] = {"concurrency": concurrency, "expires_at_ms": now_ms + int(ttl_s * 1000)}
    if identity is not None:
        record |= {**asdict(identity), "beat_at_ms": now_ms, "draining": draining}
    client.hset(keys.WORKERS, worker, json.dumps(record))


def forget(client: redis.Redis, worker: str) -> None:
    client.hdel(keys.WORKERS, worker)


def live_workers(client: redis.Redis) -> dict[str, WorkerBeat]:
    """Workers whose heartbeat has not expired, by name; prunes the dead and unreadable ones."""
    now_ms = int(time.time() * 1000)
    alive: dict[str, WorkerBeat] = {}
    dead: list[str] = []
    for key, raw in client.hgetall(keys.WORKERS).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        beat = WorkerBeat.parse(name, raw)
        if beat is not None and beat.expires_at_ms >= now_ms:
            alive[name] = beat
        else:
            dead.append(name)
    if dead:
        client.hdel(keys.WORKERS, *dead)
    return alive


def total_slots(workers: Mapping[str, WorkerBeat]) -> int:
    return sum(beat.slots for beat in workers.values())


def held_by(client: redis.Redis) -> Counter[str]:
    """Jobs each lease holder has now, from the lease owners (``token|holder``)."""
    held: Counter[str] = Counter()
    for owner in client.hvals(keys.LEASE_OWNERS):
        text = owner.decode() if isinstance(owner, bytes) else str(owner)
        _, sep, holder = text.partition("|")
        if sep and holder:
            held[holder] += 1
    return held


def roster(client: redis.Redis) -> list[dict[str, Any]]:
    """Every live worker as ``/v1/status`` and ``imgq workers`` show it, by name. ``running``
    is None for a worker that does not say which lease holder it is (an older version)."""
    workers = live_workers(client)
    held = held_by(client)
    now_ms = int(time.time() * 1000)
    return [{"name": b.name, "host": b.host, "pid": b.pid, "concurrency": b.concurrency,
             "version": b.version, "draining": b.draining,
             "running": held[b.holder] if b.holder else None,
             "started_at_ms": b.started_at_ms,
             "last_beat_seconds_ago": (None if b.beat_at_ms is None
                                       else round(max(0, now_ms - b.beat_at_ms) / 1000, 1))}
            for b in sorted(workers.values(), key=lambda b: b.name)]
