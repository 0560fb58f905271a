"""Failing open: when Redis is unreachable the breaker and the vendor limits allow, count, and warn.

A broken breaker store must never stop the queue; it costs us protection, not service.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from prometheus_client import Counter
from redis.backoff import ConstantBackoff
from redis.retry import Retry

log = logging.getLogger("breaker")

STORE_ERRORS = Counter(
    "imgq_breaker_store_errors_total",
    "Breaker and vendor-limit operations that failed open because Redis errored.",
    ["operation"],
)


class FailOpenGuard:
    """Counts store errors and logs at most one warning per ``warn_every_s``."""

    def __init__(self, component: str, warn_every_s: float = 30.0) -> None:
        self.component = component
        self.errors = 0
        self._warn_every_s = warn_every_s
        self._last_warning_s = float("-inf")
        self._lock = threading.Lock()

    def failed(self, operation: str, error: Exception) -> None:
        STORE_ERRORS.labels(operation=operation).inc()
        with self._lock:
            self.errors += 1
            now_s = time.monotonic()
            if now_s - self._last_warning_s < self._warn_every_s:
                return
            self._last_warning_s = now_s
            errors = self.errors
        log.warning("%s: %s failed, allowing (fail open; %d errors so far): %r",
                    self.component, operation, errors, error)


REDIS_FAILURES = (redis.RedisError, OSError)


def fail_open_redis(url: str, timeout_s: float = 0.5, retries: int = 1) -> redis.Redis:
    """A Redis client for code that fails open: short timeouts and one quick retry.

    redis-py's default retries a refused connection with exponential backoff for seconds; code
    that fails open should instead give up within a fraction of a second.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ConstantBackoff(0.01), retries),
    )
