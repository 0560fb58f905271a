"""A Redis client suited to the breaker: short timeouts and one quick retry.

redis-py's default retries a refused connection with exponential backoff for seconds; a breaker
that fails open should instead give up within a fraction of a second.
"""

from __future__ import annotations

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry


def breaker_redis(url: str, timeout_s: float = 0.5, retries: int = 1) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(ConstantBackoff(0.01), retries),
    )
