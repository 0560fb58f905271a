"""Fixtures for the router tests: a small breaker in memory with a hand-moved clock, and the real
vendor limits on the test Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from breaker import BreakerPolicy, InMemoryBreakerStore
from providers.catalogue import ModelSpec, load_catalogue
from tests.breaker.conftest import Clock
from throttle import VendorLimits

POLICY = BreakerPolicy(window_s=10, minimum_calls=4, open_duration_s=5.0, half_open_probes=2,
                       slow_call_threshold_s=60.0, quota_default_cooldown_s=30.0,
                       probe_timeout_s=60.0)


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def breaker(clock: Clock) -> InMemoryBreakerStore:
    return InMemoryBreakerStore(lambda _model: POLICY, clock_ms=clock)


@pytest.fixture()
def limits(clean_redis: str) -> Iterator[VendorLimits]:
    client = redis.Redis.from_url(clean_redis)
    yield VendorLimits(client)
    client.close()


@pytest.fixture()
def models() -> list[ModelSpec]:
    """The default route, with generous rate limits so only the tests' own limits bite."""
    catalogue = load_catalogue()
    return [catalogue.models[m].model_copy(update={"requests_per_minute": 60_000})
            for m in catalogue.routes["default"].models]
