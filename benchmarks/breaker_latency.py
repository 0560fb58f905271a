"""Breaker latency: one allow + one record, as a worker does around every vendor call.

    python -m benchmarks.breaker_latency --redis-url redis://127.0.0.1:6379/15

Prints p50/p99 per operation for the shared Redis store (each operation one EVALSHA round
trip) and, for comparison, the in-process store ("one breaker per process"). The benchmark
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from breaker import (
    BreakerPolicy,
    BreakerStore,
    InMemoryBreakerStore,
    Outcome,
    RedisBreakerStore,
)
from imagequeue.failopen import fail_open_redis

PREFIX = "imgq:v1:bench:breaker"


def percentile(samples_ms: list[float], fraction: float) -> float:
    ordered = sorted(samples_ms)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(store: BreakerStore, iterations: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {"allow": [], "record": [], "allow+record": []}
    model = "bench-model"
    for i in range(iterations):
        outcome = Outcome.FAILURE if i % 10 == 0 else Outcome.SUCCESS  # 10 %: stays closed
        started = time.perf_counter()
        decision = store.allow(model)
        allowed_at = time.perf_counter()
        store.record(model, outcome, 1.0, probe=decision.probe)
        done = time.perf_counter()
        timings["allow"].append((allowed_at - started) * 1000)
        timings["record"].append((done - allowed_at) * 1000)
        timings["allow+record"].append((done - started) * 1000)
    return timings


def report(name: str, timings: dict[str, list[float]]) -> None:
    for operation, samples_ms in timings.items():
        print(f"{name:<10} {operation:<13} {statistics.median(samples_ms):>9.3f} "
              f"{percentile(samples_ms, 0.99):>9.3f} {max(samples_ms):>9.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--iterations", type=int, default=5000)
    args = parser.parse_args(argv)

    policy = BreakerPolicy(failure_rate_threshold=0.5)
    policy_for: Callable[[str], BreakerPolicy] = lambda _model: policy  # noqa: E731
    client = fail_open_redis(args.redis_url, timeout_s=2.0)
    redis_store = RedisBreakerStore(client, policy_for, key_prefix=PREFIX)
    stores: dict[str, BreakerStore] = {
        "redis": redis_store,
        "in-memory": InMemoryBreakerStore(policy_for),
    }
    print(f"{args.iterations} iterations of allow + record against {args.redis_url}")
    print(f"{'store':<10} {'operation':<13} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    try:
        for name, store in stores.items():
            measure(store, min(200, args.iterations))  # warm up: scripts loaded, pool filled
            report(name, measure(store, args.iterations))
        if redis_store.store_errors:
            print(f"warning: {redis_store.store_errors} store errors (failed open): "
                  "the redis figures are not meaningful")
    finally:
        stale = list(client.scan_iter(f"{PREFIX}:*"))
        if stale:
            client.delete(*stale)
        client.close()


if __name__ == "__main__":
    main()
