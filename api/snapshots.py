"""Wakes the event streams when the scheduler publishes a queue snapshot.

The scheduler writes the snapshot once a second and publishes its ``as_of_s`` on
``keys.SNAPSHOT_CHANNEL``. Each API process holds one subscription (``SnapshotListener``, started
and stopped by the app's lifespan) and wakes every open stream at once; each stream then reads
its job or batch again. A stream no snapshot woke for ``stream_fallback_poll_s`` reads again
anyway, so it still follows its job while no scheduler publishes, and while Redis is unreachable:
the listener then logs the outage once and subscribes again every second until Redis is back.

The same subscription keeps the process's copies honest: each snapshot announced marks the held
snapshot old (``SnapshotCache``), and a tenant changed on ``keys.TENANTS_CHANNEL`` makes the
process forget the tenants it holds (``TenantCache``). While it is down, both read afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.tenant_cache import TenantCache
from imagequeue import keys
from scheduler.eta.snapshot import SnapshotCache
from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors

log = logging.getLogger(__name__)
TENANTS = keys.TENANTS_CHANNEL.encode()


class SnapshotListener:
    """The process's one subscription to the snapshot channel, fanned out to its streams."""

    RETRY_S = 1.0  # between attempts to subscribe while Redis is unreachable
    PING_EVERY_S = 5.0  # a silent subscription is checked with a PING this often
    SILENT_LIMIT_S = 15.0  # and taken as broken (and opened again) after this long unanswered

    def __init__(self, redis_url: str, timeout_s: float, snapshots: SnapshotCache | None = None,
                 tenants: TenantCache | None = None) -> None:
        self.redis_url = redis_url
        self.timeout_s = timeout_s
        self.snapshots = snapshots
        self.tenants = tenants
        self.subscribed = False
        self.heard = 0  # snapshots announced since the listener started
        self._next: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.outages = OutageLog("snapshot listener", log, backoff_s=self.RETRY_S)
        self.errors = RepeatedErrors("snapshot listener", log)

    def next_snapshot(self) -> asyncio.Event:
        """An event set when the next snapshot is announced. Take it before reading what a
        stream sends, so that a snapshot announced during the read wakes the stream again."""
        if self._next is None:
            self._next = asyncio.Event()
        return self._next

    @staticmethod
    async def wait(wake: asyncio.Event, timeout_s: float) -> bool:
        """Until ``wake`` is set or ``timeout_s`` has passed; True if a snapshot came."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await wake.wait()
        return wake.is_set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="snapshot listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _announce(self) -> None:
        if self.snapshots is not None:
            self.snapshots.announce()
        wake, self._next = self._next, None
        self.heard += 1
        if wake is not None:
            wake.set()

    def _heard(self, channel: bytes) -> None:
        if channel != TENANTS:
            self._announce()
        elif self.tenants is not None:
            self.tenants.forget()

    def _listening(self, up: bool) -> None:
        """The caches may hold copies only while every change reaches them."""
        if self.tenants is not None:
            self.tenants.forget()
            self.tenants.listening = up
        if self.snapshots is not None:
            self.snapshots.listening = up

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except DEPENDENCY_ERRORS as exc:
                self.outages.failed(exc)
            except Exception as exc:  # noqa: BLE001 - streams fall back to polling meanwhile
                self.errors.error(exc)
            self.subscribed = False
            self._listening(False)
            await asyncio.sleep(self.RETRY_S)

    async def _listen(self) -> None:
        """Subscribe and announce each snapshot until the connection fails (raises)."""
        client = aioredis.Redis.from_url(
            self.redis_url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0))  # _run retries, and logs the outage
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(keys.SNAPSHOT_CHANNEL, keys.TENANTS_CHANNEL)
                self.subscribed = True
                self._listening(True)
                self.outages.succeeded(("redis",))
                heard_at = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=self.PING_EVERY_S)
                    now = time.monotonic()
                    if message is not None:
                        heard_at = now
                        if message["type"] == "message":
                            self._heard(message["channel"])
                    elif now - heard_at > self.SILENT_LIMIT_S:
                        raise redis.ConnectionError(
                            f"no answer on the snapshot subscription for {self.SILENT_LIMIT_S:.0f}s")
                    elif now - heard_at >= self.PING_EVERY_S:
                        await pubsub.ping()  # its PONG comes back as a message
        finally:
            await client.aclose()
