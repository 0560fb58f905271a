"""The router asks the breaker and the vendor limits before every call and records every outcome."""

from __future__ import annotations

import threading

import pytest

from breaker import BreakerState, InMemoryBreakerStore
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage, GenerationRequest, GenerationResult
from tests.breaker.conftest import Clock
from tests.workers.conftest import POLICY
from throttle import VendorLimits
from workers.admission import Admission, LimitsConfig
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
