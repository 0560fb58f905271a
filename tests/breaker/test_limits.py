"""Cluster-wide vendor limits: the concurrency semaphore and the requests-per-minute limit."""

from __future__ import annotations

import threading
import time
import uuid

import redis

from cli.stack import free_port
from imagequeue.failopen import fail_open_redis
from tests.breaker.conftest import Clock
from throttle import VendorLimits

MODEL = "flux-2-pro"


def test_the_semaphore_never_admits_more_than_the_limit_across_threads(
    redis_client: redis.Redis,
) -> None:
    limits = VendorLimits(redis_client)
    in_flight, most_in_flight, admitted = 0, 0, 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal in_flight, most_in_flight, admitted
        for _ in range(40):
            holder = uuid.uuid4().hex
            if not limits.acquire(MODEL, limit=2, holder_id=holder, ttl_s=30):
                continue
            with lock:
                in_flight += 1
                admitted += 1
                most_in_flight = max(most_in_flight, in_flight)
            time.sleep(0.001)
            with lock:
                in_flight -= 1
            limits.release(MODEL, holder)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_in_flight <= 2
    assert admitted >= 2
    assert redis_client.zcard(f"imgq:v1:limits:concurrency:{MODEL}") == 0


def test_a_crashed_holders_slot_frees_itself_after_its_ttl(redis_client: redis.Redis) -> None:
    clock = Clock()
    limits = VendorLimits(redis_client, clock_ms=clock)
    assert limits.acquire(MODEL, limit=1, holder_id="crashed-worker", ttl_s=30)
    assert not limits.acquire(MODEL, limit=1, holder_id="next-worker", ttl_s=30)
    clock.advance(29.999)
    assert not limits.acquire(MODEL, limit=1, holder_id="next-worker", ttl_s=30)
    clock.advance(0.001)
    assert limits.acquire(MODEL, limit=1, holder_id="next-worker", ttl_s=30)


def test_an_expired_slot_frees_itself_on_the_redis_clock(redis_client: redis.Redis) -> None:
    limits = VendorLimits(redis_client)
    assert limits.acquire(MODEL, limit=1, holder_id="crashed-worker", ttl_s=0.1)
    assert not limits.acquire(MODEL, limit=1, holder_id="next-worker", ttl_s=10)
    time.sleep(0.15)
    assert limits.acquire(MODEL, limit=1, holder_id="next-worker", ttl_s=10)


def test_renewing_keeps_a_slot_and_reacquiring_does_not_take_a_second(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    limits = VendorLimits(redis_client, clock_ms=clock)
    assert limits.acquire(MODEL, limit=2, holder_id="a", ttl_s=10)
    assert limits.acquire(MODEL, limit=2, holder_id="a", ttl_s=10)
    assert limits.acquire(MODEL, limit=2, holder_id="b", ttl_s=10)
    clock.advance(8)
    assert limits.renew(MODEL, "a", ttl_s=10)
    clock.advance(8)  # b has expired, a was renewed
    assert not limits.renew(MODEL, "b", ttl_s=10)
    assert limits.acquire(MODEL, limit=2, holder_id="c", ttl_s=10)
    assert not limits.acquire(MODEL, limit=2, holder_id="d", ttl_s=10)


def test_the_rate_limit_lets_a_minutes_worth_through_then_waits_for_the_oldest(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    limits = VendorLimits(redis_client, clock_ms=clock)
    assert [limits.try_acquire_rate(MODEL, rpm=3) for _ in range(3)] == [0.0, 0.0, 0.0]
    clock.advance(10)
    assert limits.try_acquire_rate(MODEL, rpm=3) == 50.0  # the first call leaves at t=60 s
    clock.advance(50)  # t=60 s: the first three calls have left the window
    assert [limits.try_acquire_rate(MODEL, rpm=3) for _ in range(4)] == [0.0, 0.0, 0.0, 60.0]


def test_no_sixty_second_window_ever_holds_more_than_rpm_calls(
    redis_client: redis.Redis,
) -> None:
    clock = Clock()
    limits = VendorLimits(redis_client, clock_ms=clock)
    granted_s: list[float] = []
    for _ in range(600):  # a caller trying every 0.5 s for 5 minutes
        if limits.try_acquire_rate(MODEL, rpm=20) == 0.0:
            granted_s.append(clock.now_ms / 1000)
        clock.advance(0.5)
    assert len(granted_s) == 100  # 20 per minute over 5 minutes
    for k, start in enumerate(granted_s):
        assert sum(1 for t in granted_s[k:] if t < start + 60) <= 20


def test_callers_that_wait_as_told_are_spaced_on_the_redis_clock(
    redis_client: redis.Redis,
) -> None:
    limits = VendorLimits(redis_client)
    started_s: list[float] = []
    while len(started_s) < 5:
        wait_s = limits.try_acquire_rate(MODEL, rpm=2, window_s=0.1)  # two per 100 ms
        if wait_s == 0.0:
            started_s.append(time.monotonic())
        else:
            time.sleep(wait_s)
    assert started_s[-1] - started_s[0] >= 0.2 - 0.005  # calls 3 and 5 wait a window each


def test_limits_fail_open_when_redis_is_unreachable() -> None:
    unreachable = fail_open_redis(f"redis://127.0.0.1:{free_port()}/15")
    limits = VendorLimits(unreachable)
    assert limits.acquire(MODEL, limit=1, holder_id="a", ttl_s=10)
    assert limits.acquire(MODEL, limit=1, holder_id="b", ttl_s=10)
    assert limits.try_acquire_rate(MODEL, rpm=1) == 0.0
    limits.release(MODEL, "a")
    assert limits.store_errors == 4
    unreachable.close()
