"""A Redis restart under an open breaker: with append-only persistence the breaker is still open
afterwards, with the same open-until time; without it the state is gone and the model is called
again (what the README says about running Redis without persistence).

Real processes: a private redis-server is stopped with SIGTERM, as a service manager or
``docker compose restart`` does, and started again on the same port with the same directory. The
breaker is driven through the store the workers use (``make_breaker_store``), Lua scripts and all.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from breaker import (
    BreakerState,
    BreakerStore,
    ModelHealth,
    Outcome,
    RedisBreakerStore,
)
from breaker.factory import policy_source
from cli.stack import RedisServer
from imagequeue.failopen import fail_open_redis
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from tests.conftest import _missing

MODEL = "gemini-3-pro-image-preview"
MINIMUM_CALLS = 5
OPEN_DURATION_S = 600.0  # far longer than the test: an OPEN read afterwards is the stored one


@pytest.fixture()
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    """``request.param``: whether the server keeps an append-only file."""
    if shutil.which("redis-server") is None:
        _missing("redis-server", "install it (apt-get install redis-server)")
    data_dir = tmp_path / "redis-data" if request.param else None
    running = RedisServer(tmp_path / "redis.log", data_dir=data_dir).start()
    yield running
    running.stop()


@pytest.fixture()
def store(server: RedisServer) -> Iterator[RedisBreakerStore]:
    """The store every worker builds from its settings (``breaker_mode`` ``shared``), on a
    client of the test's own that is closed afterwards."""
    redis_url = server.url
    settings = Settings(_env_file=None, redis_url=redis_url,  # type: ignore[call-arg]
                        breaker_mode="shared", breaker_minimum_calls=MINIMUM_CALLS,
                        breaker_failure_rate_threshold=0.5, breaker_window_s=60,
                        breaker_open_duration_s=OPEN_DURATION_S)
    client = fail_open_redis(redis_url)
    try:
        yield RedisBreakerStore(client, policy_source(settings, load_catalogue().models))
    finally:
        client.close()


def open_breaker(store: BreakerStore, model: str) -> ModelHealth:
    """Calls the way a worker makes them (allow, then record), every one a vendor 503, until the
    breaker opens."""
    for _ in range(MINIMUM_CALLS * 2):
        decision = store.allow(model)
        assert decision.allowed, decision
        if store.record(model, Outcome.FAILURE, 0.2, probe=decision.probe) is BreakerState.OPEN:
            break
    opened = store.snapshot(model)
    assert opened.state is BreakerState.OPEN, opened
    return opened


@pytest.mark.parametrize("server", [True], indirect=True, ids=["appendonly-everysec"])
def test_an_open_breaker_is_still_open_with_the_same_deadline_after_redis_restarts(
        server: RedisServer, store: RedisBreakerStore) -> None:
    # Given a model whose breaker the shared store opened (in Redis, not failed open)
    opened = open_breaker(store, MODEL)
    assert isinstance(store, RedisBreakerStore) and store.store_errors == 0
    assert opened.open_until_ms is not None

    # When Redis restarts
    server.restart()

    # Then the breaker is still open until the same moment, and workers still skip the model
    after = store.snapshot(MODEL)
    assert after.state is BreakerState.OPEN
    assert after.open_until_ms == opened.open_until_ms
    assert after.failures == opened.failures
    decision = store.allow(MODEL)
    assert not decision.allowed and decision.retry_at_ms == opened.open_until_ms
    assert [e.to_state for e in store.events(MODEL)][:1] == [BreakerState.OPEN]
    assert store.store_errors == 0


@pytest.mark.parametrize("server", [False], indirect=True, ids=["no-persistence"])
def test_without_persistence_a_restart_forgets_the_open_breaker_and_the_model_is_called_again(
        server: RedisServer, store: RedisBreakerStore) -> None:
    # Given a model whose breaker is open
    open_breaker(store, MODEL)

    # When a Redis that keeps nothing on disk restarts
    server.restart()

    # Then the breaker comes back closed with an empty window: the next call goes to the model
    after = store.snapshot(MODEL)
    assert after.state is BreakerState.CLOSED
    assert (after.calls, after.failures, after.open_until_ms) == (0, 0, None)
    decision = store.allow(MODEL)
    assert decision.allowed and not decision.probe
    assert store.events(MODEL) == []
