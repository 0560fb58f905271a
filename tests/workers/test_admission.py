"""The router asks the breaker and the vendor limits before every call and records every outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from breaker import BreakerPolicy, BreakerState, BreakerStore, InMemoryBreakerStore, RedisBreakerStore
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult
from tests.breaker.conftest import Clock
from tests.workers.conftest import POLICY
from throttle import VendorLimits
from workers.admission import Admission, CallsInFlight, LimitsConfig
from workers.router import SKIPPED, SUCCESS, walk

REQUEST = GenerationRequest(prompt="a lighthouse at dusk")
IMAGE = GenerationResult([GeneratedImage(b"png", "image/png", 1024, 1024)], cost_usd=0.04)


def failing_model(dead: str, error_class: ErrorClass = ErrorClass.OVERLOADED,
                  calls: list[str] | None = None, **error_fields: object):
    def call(model: ModelSpec, _request: GenerationRequest) -> GenerationResult:
        if calls is not None:
            calls.append(model.id)
        if model.id == dead:
            raise ProviderError(error_class, f"{error_class.value} from the vendor",
                                **error_fields)  # type: ignore[arg-type]
        return IMAGE
    return call


def admission(breaker: InMemoryBreakerStore, limits: VendorLimits, job: str = "job_1",
              slot_wait_s: float = 0.2) -> Admission:
    return Admission(breaker, limits, job, LimitsConfig(slot_wait_s=slot_wait_s, slot_margin_s=5))


def test_overloads_open_the_breaker_and_later_jobs_skip_the_model_saying_until_when(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0].id
    calls: list[str] = []
    for k in range(POLICY.minimum_calls):
        outcome = walk(models, REQUEST, failing_model(first, calls=calls),
                       admission(breaker, limits, f"job_{k}"))
        assert outcome.served_by == models[1].id
    assert breaker.snapshot(first).state is BreakerState.OPEN

    hooks = admission(breaker, limits, "job_after")
    calls.clear()
    outcome = walk(models, REQUEST, failing_model(first, calls=calls), hooks)

    assert calls == [models[1].id]
    skipped = outcome.attempts[0]
    assert (skipped.model, skipped.outcome) == (first, SKIPPED)
    assert skipped.message is not None and skipped.message.startswith("breaker open until ")
    assert hooks.retry_at_ms == breaker.snapshot(first).open_until_ms


def test_bad_prompts_at_any_rate_never_open_the_breaker_and_fail_the_job(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0].id
    for k in range(POLICY.minimum_calls * 5):
        calls: list[str] = []
        outcome = walk(models, REQUEST, failing_model(first, ErrorClass.INVALID_REQUEST, calls),
                       admission(breaker, limits, f"job_{k}"))
        assert outcome.job_failed and calls == [first]  # no other model is tried
    health = breaker.snapshot(first)
    assert health.state is BreakerState.CLOSED
    assert health.calls == 0


def test_an_auth_error_marks_the_model_misconfigured_with_the_vendors_message(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0].id
    walk(models, REQUEST, failing_model(first, ErrorClass.AUTH), admission(breaker, limits))
    outcome = walk(models, REQUEST, failing_model(first), admission(breaker, limits, "job_2"))
    assert outcome.attempts[0].outcome == SKIPPED
    assert outcome.attempts[0].message == "misconfigured: auth from the vendor"


def test_a_429_starts_a_cooldown_of_its_retry_after_not_a_health_failure(
        breaker: InMemoryBreakerStore, limits: VendorLimits, clock: Clock,
        models: list[ModelSpec]) -> None:
    first = models[0].id
    walk(models, REQUEST, failing_model(first, ErrorClass.QUOTA, retry_after_s=7.0),
         admission(breaker, limits))
    hooks = admission(breaker, limits, "job_2")
    outcome = walk(models, REQUEST, failing_model(first), hooks)
    assert outcome.attempts[0].message is not None
    assert outcome.attempts[0].message.startswith("quota cooldown until ")
    assert hooks.retry_at_ms == clock.now_ms + 7_000
    assert breaker.snapshot(first).failures == 0


def test_half_open_probes_that_succeed_close_the_breaker(
        breaker: InMemoryBreakerStore, limits: VendorLimits, clock: Clock,
        models: list[ModelSpec]) -> None:
    first = models[0].id
    for k in range(POLICY.minimum_calls):
        walk(models, REQUEST, failing_model(first), admission(breaker, limits, f"job_{k}"))
    clock.advance(POLICY.open_duration_s)
    served = [walk(models, REQUEST, failing_model("none"), admission(breaker, limits, f"p{k}"))
              .served_by for k in range(POLICY.half_open_probes)]
    assert served == [first] * POLICY.half_open_probes
    assert breaker.snapshot(first).state is BreakerState.CLOSED


def test_a_full_concurrency_cap_skips_the_model_after_a_bounded_wait(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    capped = models[0].model_copy(update={"max_concurrency": 1})
    route = [capped, *models[1:]]
    assert limits.acquire(capped.id, 1, "another-worker", ttl_s=30)
    outcome = walk(route, REQUEST, failing_model("none"), admission(breaker, limits))
    assert outcome.served_by == models[1].id
    assert outcome.attempts[0].message == "concurrency cap reached (1 calls in flight)"


def test_the_slot_is_released_right_after_the_call_even_when_it_raises(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    capped = models[0].model_copy(update={"max_concurrency": 1})

    def broken(_model: ModelSpec, _request: GenerationRequest) -> GenerationResult:
        raise RuntimeError("adapter bug")

    with pytest.raises(RuntimeError, match="adapter bug"):
        walk([capped], REQUEST, broken, admission(breaker, limits))
    assert limits.acquire(capped.id, 1, "next-caller", ttl_s=30)


def test_concurrent_jobs_never_exceed_the_cap(
        breaker: InMemoryBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    capped = models[0].model_copy(update={"max_concurrency": 2})
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def slow(model: ModelSpec, _request: GenerationRequest) -> GenerationResult:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        threading.Event().wait(0.05)
        with lock:
            in_flight[0] -= 1
        return IMAGE

    results: list[str] = []

    def job(k: int) -> None:
        outcome = walk([capped], REQUEST, slow, admission(breaker, limits, f"j{k}", 5.0))
        results.append(outcome.attempts[-1].outcome)

    threads = [threading.Thread(target=job, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 2
    assert results == [SUCCESS] * 8


GATED = BreakerPolicy(window_s=10, minimum_calls=2, gate=True, gate_full_calls=64,
                      slow_call_threshold_s=60.0, probe_timeout_s=60.0)


def gated_admission(breaker: BreakerStore, limits: VendorLimits, job: str,
                    gate_wait_s: float = 5.0, **hooks: Any) -> Admission:
    return Admission(breaker, limits, job, LimitsConfig(slot_wait_s=0.2, slot_margin_s=5,
                                                        gate_wait_s=gate_wait_s), **hooks)


@pytest.fixture()
def make_redis_store(clean_redis: str, clock: Clock
                     ) -> Iterator[Callable[[BreakerPolicy], RedisBreakerStore]]:
    client = redis.Redis.from_url(clean_redis)
    yield lambda policy: RedisBreakerStore(client, lambda _model: policy, clock_ms=clock)
    client.close()


@pytest.fixture()
def shared(clean_redis: str) -> Iterator[RedisBreakerStore]:
    client = redis.Redis.from_url(clean_redis)
    yield RedisBreakerStore(client, lambda _model: GATED)
    client.close()


def test_a_job_at_a_shut_gate_waits_for_the_first_results_then_calls_the_same_model(
        shared: RedisBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0].id
    answer = threading.Event()
    started = threading.Barrier(3)

    def slow_call(model: ModelSpec, _request: GenerationRequest) -> GenerationResult:
        started.wait(5)
        assert answer.wait(5)
        return IMAGE

    running = [threading.Thread(target=walk, args=(models, REQUEST, slow_call,
                                                   gated_admission(shared, limits, f"job_{k}")))
               for k in range(2)]
    for thread in running:
        thread.start()
    started.wait(5)  # both calls the cold gate admits are in flight
    assert shared.snapshot(first).in_flight == 2
    waits: list[str] = []
    commits: list[int] = []
    hooks = gated_admission(shared, limits, "job_waits",
                            on_gate_wait=lambda index, model, why: waits.append(why),
                            on_wait=lambda: commits.append(1))
    threading.Timer(0.3, answer.set).start()
    outcome = walk(models, REQUEST, failing_model("none"), hooks)
    for thread in running:
        thread.join(5)

    assert outcome.served_by == first  # it waited for evidence instead of failing over
    assert waits == [f"waiting for first results from {models[0].shown_name}"]
    assert commits  # its claim committed while it waited
    health = shared.snapshot(first)
    assert (health.in_flight, health.calls, health.failures) == (0, 3, 0)


def test_a_gate_shut_longer_than_the_wait_sends_the_job_to_the_next_model(
        shared: RedisBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0].id
    for k in range(2):
        assert shared.allow(first, f"stuck_{k}:call").allowed  # calls whose results are late
    hooks = gated_admission(shared, limits, "job_moves_on", gate_wait_s=0.2)
    begun = time.monotonic()
    outcome = walk(models, REQUEST, failing_model("none"), hooks)
    assert 0.2 <= time.monotonic() - begun < 2.0
    assert outcome.served_by == models[1].id
    assert outcome.attempts[0].message is not None
    assert outcome.attempts[0].message.startswith("slow-start gate shut")


def test_a_hanging_model_is_skipped_at_once(make_redis_store: Any, limits: VendorLimits,
                                            models: list[ModelSpec], clock: Clock) -> None:
    store = make_redis_store(replace(GATED, slow_call_threshold_s=1.0))
    first = models[0].id
    assert store.allow(first, "hung:call").allowed
    clock.advance(1.5)
    begun = time.monotonic()
    outcome = walk(models, REQUEST, failing_model("none"),
                   gated_admission(store, limits, "job_after_hang"))
    assert time.monotonic() - begun < 1.0  # not waited for
    assert outcome.served_by == models[1].id
    assert outcome.attempts[0].message is not None and "hanging" in outcome.attempts[0].message
    assert store.snapshot(first).hanging


def test_every_way_a_call_ends_gives_its_place_back(
        shared: RedisBreakerStore, limits: VendorLimits, models: list[ModelSpec]) -> None:
    first = models[0]

    def broken(model: ModelSpec, _request: GenerationRequest) -> GenerationResult:
        raise RuntimeError("a bug in an adapter")

    with pytest.raises(RuntimeError):
        walk([first], REQUEST, broken, gated_admission(shared, limits, "job_bug"))
    walk([first], REQUEST, failing_model(first.id), gated_admission(shared, limits, "job_err"))
    walk([first], REQUEST, failing_model("none"), gated_admission(shared, limits, "job_ok"))
    capped = first.model_copy(update={"max_concurrency": 1})
    assert limits.acquire(capped.id, 1, "someone_else", 30)  # the cap is full: no call
    walk([capped], REQUEST, failing_model("none"), gated_admission(shared, limits, "job_cap"))
    assert shared.snapshot(first.id).in_flight == 0

    shared.reset(first.id)  # one failure in two calls opened it
    calls = CallsInFlight()  # a worker leaving with calls under way
    for k in range(2):
        gated_admission(shared, limits, f"job_{k}", in_flight=calls).before(0, first)
    assert shared.snapshot(first.id).in_flight == 2
    assert calls.release_all(shared) == 2
    assert shared.snapshot(first.id).in_flight == 0
