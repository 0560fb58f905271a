"""What only the shared Redis store must prove: real clock, atomicity across threads, key
layout and expiry, the events stream, failing open, and a dependency-free package."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client import REGISTRY

from breaker import (
    BreakerPolicy,
    BreakerState,
    BreakerStore,
    Decision,
    InMemoryBreakerStore,
    Outcome,
    Reason,
    RedisBreakerStore,
)
from cli.stack import free_port
from imagequeue.failopen import fail_open_redis
from tests.breaker.conftest import SMALL_POLICY
from tests.conftest import REPO_ROOT

MODEL = "seedream-4-5"


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def trip(store: BreakerStore) -> None:
    for _ in range(5):
        store.record(MODEL, Outcome.FAILURE, 0.1, probe=False)


def test_redis_time_drives_open_to_half_open(redis_client: redis.Redis) -> None:
    store = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY)  # open_duration_s = 1
    trip(store)
    denied = store.allow(MODEL)
    assert denied.reason == Reason.OPEN and denied.retry_at_ms is not None
    seconds, micros = redis_client.time()
    assert 0 < denied.retry_at_ms - (seconds * 1000 + micros // 1000) <= 1000
    time.sleep(max(0.0, denied.retry_at_ms / 1000 - (seconds + micros / 1e6)) + 0.05)
    assert store.allow(MODEL).probe


def half_open_redis_store(client: redis.Redis) -> RedisBreakerStore:
    policy = BreakerPolicy(open_duration_s=0.2, half_open_probes=3)
    store = RedisBreakerStore(client, lambda _m: policy)
    trip(store)
    time.sleep(0.25)
    return store


def half_open_memory_store(_client: redis.Redis) -> InMemoryBreakerStore:
    policy = BreakerPolicy(open_duration_s=0.2, half_open_probes=3)
    store = InMemoryBreakerStore(lambda _m: policy)
    trip(store)
    time.sleep(0.25)
    return store


@pytest.mark.parametrize("make", [half_open_redis_store, half_open_memory_store])
def test_four_threads_hammering_a_half_open_breaker_get_exactly_the_probe_budget(
    redis_client: redis.Redis, make: Callable[[redis.Redis], BreakerStore]
) -> None:
    store = make(redis_client)
    decisions: list[Decision] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def hammer() -> None:
        start.wait()
        mine = [store.allow(MODEL) for _ in range(100)]
        with lock:
            decisions.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(decisions) == 400
    assert sum(d.allowed for d in decisions) == 3
    assert sum(d.probe for d in decisions) == 3
    assert store.snapshot(MODEL).probes_admitted == 3


def test_every_key_is_namespaced_and_idle_keys_expire(redis_client: redis.Redis) -> None:
    store = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY)
    store.record(MODEL, Outcome.SUCCESS, 0.1, probe=False)
    store.record("recraft-v4", Outcome.MISCONFIGURED, 0.1, probe=False, reason="401")
    names = sorted(text(k) for k in redis_client.keys("*"))
    assert names == [
        "imgq:v1:breaker:events",
        "imgq:v1:breaker:state:recraft-v4",
        f"imgq:v1:breaker:state:{MODEL}",
        f"imgq:v1:breaker:window:{MODEL}",
    ]
    assert 0 < redis_client.pttl(f"imgq:v1:breaker:window:{MODEL}") <= 3000  # window_s + 1
    assert redis_client.ttl(f"imgq:v1:breaker:state:{MODEL}") > 86_400
    assert redis_client.ttl("imgq:v1:breaker:state:recraft-v4") == -1  # sticky: no expiry


def test_a_custom_prefix_keeps_two_deployments_apart(redis_client: redis.Redis) -> None:
    blue = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY, key_prefix="blue:v1:breaker")
    green = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY)
    trip(blue)
    assert not blue.allow(MODEL).allowed
    assert green.allow(MODEL).allowed
    assert green.events() == []


def test_transitions_are_appended_to_the_shared_stream(redis_client: redis.Redis) -> None:
    store = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY)
    trip(store)
    (entry_id, fields), = redis_client.xrange("imgq:v1:breaker:events") or []
    assert {text(k): text(v) for k, v in (fields or {}).items()} | {"at_ms": "-"} == {
        "model": MODEL, "from": "closed", "to": "open", "reason": "failure_rate",
        "calls": "5", "failures": "5", "slow": "0", "at_ms": "-",
    }
    assert abs(int(text(entry_id).split("-")[0]) - store.events()[0].at_ms) < 50


def allow_errors_counted() -> float:
    sample = REGISTRY.get_sample_value("imgq_breaker_store_errors_total", {"operation": "allow"})
    return sample or 0.0


def test_an_unreachable_redis_fails_open_counts_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unreachable = fail_open_redis(f"redis://127.0.0.1:{free_port()}/15")
    store = RedisBreakerStore(unreachable, lambda _m: SMALL_POLICY)
    counted_before = allow_errors_counted()
    with caplog.at_level(logging.WARNING, logger="breaker"):
        decisions = [store.allow(MODEL) for _ in range(3)]
        state = store.record(MODEL, Outcome.FAILURE, 1.0, probe=False)
    assert all(d.allowed and d.reason == Reason.STORE_UNAVAILABLE for d in decisions)
    assert state is BreakerState.CLOSED
    assert store.store_errors == 4
    assert allow_errors_counted() == counted_before + 3
    assert len([r for r in caplog.records if "fail open" in r.getMessage()]) == 1
    unreachable.close()


def test_the_package_imports_none_of_the_application() -> None:
    forbidden = ["celery", "sqlalchemy", "providers", "storage", "workers", "scheduler", "api"]
    code = (
        "import sys, breaker, throttle.limits\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(loaded))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == ""


def test_an_expired_window_leaves_no_stale_totals_behind(redis_client: redis.Redis) -> None:
    store = RedisBreakerStore(redis_client, lambda _m: SMALL_POLICY)
    for _ in range(4):
        store.record(MODEL, Outcome.FAILURE, 0.1, probe=False)
    redis_client.delete(f"imgq:v1:breaker:window:{MODEL}")  # as its expiry would, when idle
    store.record(MODEL, Outcome.FAILURE, 0.1, probe=False)
    assert store.allow(MODEL).allowed
    assert int(redis_client.hget(f"imgq:v1:breaker:state:{MODEL}", "calls") or 0) == 1
