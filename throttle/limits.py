"""Cluster-wide vendor limits: a concurrency cap and a requests-per-minute limit per model.

Both are Lua scripts clocked by Redis ``TIME``. A concurrency slot expires after ``ttl_s`` unless
renewed, so a crashed worker cannot leak it. Like the breaker, the limits fail open: if Redis
errors, ``acquire`` says yes and ``try_acquire_rate`` says "no wait".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import redis

from imagequeue import keys
from imagequeue.failopen import REDIS_FAILURES, FailOpenGuard
from imagequeue.lua import lua_source


class VendorLimits:
    def __init__(
        self,
        redis_client: redis.Redis,
        key_prefix: str = keys.LIMITS_PREFIX,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """``clock_ms`` replaces Redis ``TIME`` and exists for tests only."""
        self._prefix = key_prefix
        self._redis = redis_client
        self._clock_ms = clock_ms
        self.guard = FailOpenGuard("vendor limits")
        self._semaphore = redis_client.register_script(lua_source("throttle", "semaphore.lua"))
        self._rate = redis_client.register_script(lua_source("throttle", "rate.lua"))

    @property
    def store_errors(self) -> int:
        return self.guard.errors

    def acquire(self, model: str, limit: int, holder_id: str, ttl_s: float) -> bool:
        """Take one of ``limit`` concurrent slots for ``holder_id`` (again = renew)."""
        return self._semaphore_call("acquire", model, holder_id, limit, ttl_s, fail_open=True)

    def renew(self, model: str, holder_id: str, ttl_s: float) -> bool:
        """Extend a held slot; False if it had already expired (the caller lost it)."""
        return self._semaphore_call("renew", model, holder_id, 0, ttl_s, fail_open=True)

    def release(self, model: str, holder_id: str) -> None:
        self._semaphore_call("release", model, holder_id, 0, 0, fail_open=False)

    def release_holders(self, model: str, holder_prefix: str) -> int:
        """Release every slot whose holder id starts with ``holder_prefix`` (all the slots of a
        dead worker's job), instead of waiting for them to expire."""
        key = keys.concurrency_holders(model, self._prefix)
        holders = [h for h in self._redis.zscan_iter(key, match=f"{holder_prefix}*")]
        return int(self._redis.zrem(key, *[h for h, _ in holders])) if holders else 0

    def try_acquire_rate(self, model: str, rpm: int, window_s: float = 60.0) -> float:
        """0.0 if a call may start now (it is counted), else the seconds to wait first: at most
        ``rpm`` calls in any ``window_s`` (60 s) across the cluster."""
        try:
            wait_ms = self._rate(keys=[keys.rate_window(model, self._prefix),
                                       keys.rate_seq(model, self._prefix)],
                                 args=[max(1, int(rpm)), math.floor(window_s * 1000 + 0.5), self._now_arg()])
        except REDIS_FAILURES as error:
            self.guard.failed("rate", error)
            return 0.0
        return int(wait_ms) / 1000

    def _semaphore_call(
        self, action: str, model: str, holder_id: str, limit: int, ttl_s: float, fail_open: bool
    ) -> bool:
        try:
            result = self._semaphore(
                keys=[keys.concurrency_holders(model, self._prefix)],
                args=[action, holder_id, limit, math.floor(ttl_s * 1000 + 0.5), self._now_arg()],
            )
        except REDIS_FAILURES as error:
            self.guard.failed(f"semaphore_{action}", error)
            return fail_open
        return bool(result)

    def _now_arg(self) -> str:
        return "" if self._clock_ms is None else str(self._clock_ms())
