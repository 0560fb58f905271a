"""Fixtures for the breaker tests: a hand-moved clock and both store implementations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from breaker import BreakerPolicy, BreakerStore, InMemoryBreakerStore, RedisBreakerStore
from tests.breaker.drive import T0_MS

SMALL_POLICY = BreakerPolicy(
    window_s=2, open_duration_s=1.0, minimum_calls=5, half_open_probes=3,
    slow_call_threshold_s=1.0, quota_default_cooldown_s=5.0, probe_timeout_s=10.0,
)


class Clock:
    """Epoch milliseconds that move only when a test says so."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        self.now_ms += round(seconds * 1000)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def redis_client(clean_redis: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(clean_redis)
    yield client
    client.close()


StoreFactory = Callable[[BreakerPolicy], BreakerStore]


@pytest.fixture(params=["in_memory", "redis"])
def make_store(request: pytest.FixtureRequest, clock: Clock) -> StoreFactory:
    """Builds a store of each implementation on the hand-moved clock."""
    if request.param == "in_memory":
        return lambda policy: InMemoryBreakerStore(lambda _model: policy, clock_ms=clock)
    client: redis.Redis = request.getfixturevalue("redis_client")
    return lambda policy: RedisBreakerStore(client, lambda _model: policy, clock_ms=clock)


@pytest.fixture()
def store(make_store: StoreFactory) -> BreakerStore:
    return make_store(BreakerPolicy())
