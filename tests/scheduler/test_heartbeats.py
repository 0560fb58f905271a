"""Worker heartbeats on a real Redis: the identity record round trip, the short form older
workers still write (a rolling upgrade), a draining worker's slots, and the roster the status and
``imgq workers`` show."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from imagequeue import keys
from imagequeue.settings import Settings
from scheduler.dispatcher import Dispatcher, make_sender
from scheduler.queue import heartbeats
from scheduler.queue.heartbeats import WorkerBeat, WorkerIdentity
from scheduler.queue.index import IndexEntry, WaitingIndex
from scheduler.queue.leases import Leases
from storage.db import make_engine, make_sessionmaker


@pytest.fixture()
def client(clean_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis)
    yield client
    client.close()


def test_a_heartbeat_carries_the_workers_identity_and_reads_back_as_a_record(
        client: redis.Redis) -> None:
    identity = WorkerIdentity.of_this_process("myhost:123")
    before_ms = int(time.time() * 1000)
    heartbeats.heartbeat(client, "w1@host", 4, ttl_s=30, identity=identity)

    beat = heartbeats.live_workers(client)["w1@host"]

    assert beat == WorkerBeat(name="w1@host", concurrency=4, expires_at_ms=beat.expires_at_ms,
                              host=socket.gethostname(), pid=os.getpid(),
                              version=heartbeats.package_version(),
                              started_at_ms=identity.started_at_ms, beat_at_ms=beat.beat_at_ms,
                              holder="myhost:123", draining=False)
    assert beat.version not in (None, "", "unknown")
    assert beat.beat_at_ms is not None and before_ms <= beat.beat_at_ms <= int(time.time() * 1000)
    assert beat.expires_at_ms == beat.beat_at_ms + 30_000
    assert beat.slots == 4


def test_the_short_form_of_older_workers_is_read_with_an_unknown_identity(
        client: redis.Redis) -> None:
    expires_at_ms = int((time.time() + 30) * 1000)
    client.hset(keys.WORKERS, "old@host",
                json.dumps({"concurrency": 2, "expires_at_ms": expires_at_ms}))
    heartbeats.heartbeat(client, "new@host", 3, ttl_s=30,
                         identity=WorkerIdentity.of_this_process("h:1"))

    workers = heartbeats.live_workers(client)

    assert workers["old@host"] == WorkerBeat(name="old@host", concurrency=2,
                                             expires_at_ms=expires_at_ms)
    assert heartbeats.total_slots(workers) == 5
    [old] = [row for row in heartbeats.roster(client) if row["name"] == "old@host"]
    assert old == {"name": "old@host", "host": None, "pid": None, "concurrency": 2,
                   "version": None, "draining": False, "running": None, "started_at_ms": None,
                   "last_beat_seconds_ago": None}


def test_expired_and_unreadable_entries_are_dead_and_pruned(client: redis.Redis) -> None:
    client.hset(keys.WORKERS, mapping={
        "gone@host": json.dumps({"concurrency": 2, "expires_at_ms": 1}),
        "garbled@host": "not json",
        "partial@host": json.dumps({"expires_at_ms": int((time.time() + 30) * 1000)}),
    })
    heartbeats.heartbeat(client, "alive@host", 1, ttl_s=30)

    assert list(heartbeats.live_workers(client)) == ["alive@host"]
    assert client.hkeys(keys.WORKERS) == [b"alive@host"]


def test_a_draining_worker_offers_no_slot_and_forget_removes_it(client: redis.Redis) -> None:
    identity = WorkerIdentity.of_this_process("h:1")
    heartbeats.heartbeat(client, "a@host", 4, ttl_s=30, identity=identity)
    heartbeats.heartbeat(client, "b@host", 2, ttl_s=30, identity=identity, draining=True)

    workers = heartbeats.live_workers(client)

    assert (workers["b@host"].draining, workers["b@host"].slots) == (True, 0)
    assert heartbeats.total_slots(workers) == 4
    heartbeats.forget(client, "b@host")
    assert list(heartbeats.live_workers(client)) == ["a@host"]


def test_the_roster_counts_each_workers_jobs_from_the_lease_owners(client: redis.Redis) -> None:
    index, leases = WaitingIndex(client), Leases(client, 60_000)
    index.push([IndexEntry(j) for j in ("j1", "j2", "j3")])
    _, token = index.take(3, 60_000)
    leases.hold("hostA:1", [("j1", token), ("j2", token)])  # j3: dispatched, not received yet
    for name, holder in (("a@hostA", "hostA:1"), ("b@hostB", "hostB:2")):
        heartbeats.heartbeat(client, name, 4, ttl_s=30,
                             identity=WorkerIdentity("host", 1, "0.1.0", 1_000, holder))

    rows = heartbeats.roster(client)

    assert [(r["name"], r["running"]) for r in rows] == [("a@hostA", 2), ("b@hostB", 0)]
    assert all(0 <= r["last_beat_seconds_ago"] < 5 for r in rows)


def test_the_dispatcher_counts_no_slot_of_a_draining_worker_nor_the_jobs_it_still_runs(
        client: redis.Redis, clean_redis: str) -> None:
    index, leases = WaitingIndex(client), Leases(client, 60_000)
    index.push([IndexEntry(f"j{k}") for k in range(4)])
    _, token = index.take(3, 60_000)
    leases.hold("hostA:1", [("j0", token), ("j1", token)])  # on the worker that is leaving
    leases.hold("hostB:2", [("j2", token)])
    for name, holder in (("a@hostA", "hostA:1"), ("b@hostB", "hostB:2")):
        heartbeats.heartbeat(client, name, 4, ttl_s=30,
                             identity=WorkerIdentity("host", 1, "0.1.0", 1_000, holder))
    engine = make_engine("sqlite://")
    sender = make_sender(Settings(redis_url=clean_redis))
    dispatcher = Dispatcher(client, make_sessionmaker(engine), sender, buffer=1)
    try:
        assert dispatcher.free_slots() == 4 + 4 + 1 - 3
        heartbeats.heartbeat(client, "a@hostA", 4, ttl_s=30, draining=True,
                             identity=WorkerIdentity("host", 1, "0.1.0", 1_000, "hostA:1"))
        assert dispatcher.free_slots() == 4 + 1 - 1  # b's slots, less the one job b runs
    finally:
        engine.dispose()
