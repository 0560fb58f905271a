"""The BreakerStore contract, run against the in-memory reference and the Redis (Lua) store."""

from __future__ import annotations

from breaker import BreakerPolicy, BreakerState, BreakerStore, Colour, Outcome, Reason
from tests.breaker.conftest import Clock, StoreFactory

MODEL = "gemini-3-pro-image-preview"


def fail(store: BreakerStore, times: int, model: str = MODEL) -> None:
    for _ in range(times):
        store.record(model, Outcome.FAILURE, 1.0, probe=False)


def take_probes(store: BreakerStore, outcome: Outcome, count: int) -> None:
    for _ in range(count):
        decision = store.allow(MODEL)
        assert decision.allowed and decision.probe
        store.record(MODEL, outcome, 1.0, probe=True)


def test_a_model_never_seen_is_allowed_and_green(store: BreakerStore) -> None:
    decision = store.allow(MODEL)
    health = store.snapshot(MODEL)
    assert decision.allowed and not decision.probe and decision.reason is None
    assert (health.state, health.colour, health.calls) == (BreakerState.CLOSED, Colour.GREEN, 0)


def test_failures_open_the_breaker_and_allow_says_until_when(
    store: BreakerStore, clock: Clock
) -> None:
    store.record(MODEL, Outcome.SUCCESS, 1.0, probe=False)
    fail(store, 3)
    assert store.record(MODEL, Outcome.FAILURE, 1.0, probe=False) is BreakerState.OPEN
    decision = store.allow(MODEL)
    health = store.snapshot(MODEL)
    assert (decision.allowed, decision.reason) == (False, Reason.OPEN)
    assert decision.retry_at_ms == clock.now_ms + 300_000 == health.open_until_ms
    assert (health.calls, health.failures, health.failure_rate) == (5, 4, 0.8)
    assert health.colour is Colour.RED


def test_models_have_independent_breakers(store: BreakerStore) -> None:
    fail(store, 5, model="model-a")
    assert not store.allow("model-a").allowed
    assert store.allow("model-b").allowed


def test_recovery_goes_through_exactly_the_probe_budget(store: BreakerStore, clock: Clock) -> None:
    fail(store, 5)
    clock.advance(300)
    admitted = [store.allow(MODEL) for _ in range(5)]
    assert [d.probe for d in admitted] == [True, True, True, False, False]
    assert admitted[-1].reason == Reason.HALF_OPEN_BUDGET_SPENT
    assert store.snapshot(MODEL).probes_admitted == 3
    for _ in range(3):
        store.record(MODEL, Outcome.SUCCESS, 1.0, probe=True)
    health = store.snapshot(MODEL)
    assert (health.state, health.calls, health.colour) == (BreakerState.CLOSED, 0, Colour.GREEN)
    reasons = [(e.from_state, e.to_state, e.reason) for e in reversed(store.events(MODEL))]
    assert reasons == [
        (BreakerState.CLOSED, BreakerState.OPEN, "failure_rate"),
        (BreakerState.OPEN, BreakerState.HALF_OPEN, "open_duration_elapsed"),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED, "probes_succeeded"),
    ]


def test_a_failed_probe_opens_again(store: BreakerStore, clock: Clock) -> None:
    fail(store, 5)
    clock.advance(300)
    take_probes(store, Outcome.SUCCESS, 1)
    take_probes(store, Outcome.FAILURE, 1)
    decision = store.allow(MODEL)
    assert (decision.reason, decision.retry_at_ms) == (Reason.OPEN, clock.now_ms + 300_000)
    assert store.events(MODEL, count=1)[0].reason == "probe_failed"


def test_the_window_forgets_calls_older_than_window_s(
    make_store: StoreFactory, clock: Clock
) -> None:
    store = make_store(BreakerPolicy(window_s=10))
    for _ in range(4):
        store.record(MODEL, Outcome.SUCCESS, 1.0, probe=False)
    clock.advance(5)
    store.record(MODEL, Outcome.SUCCESS, 1.0, probe=False)
    assert store.snapshot(MODEL).calls == 5
    clock.advance(5)
    assert store.snapshot(MODEL).calls == 1
    fail(store, 3)
    assert store.snapshot(MODEL).state is BreakerState.CLOSED  # 4 calls in the window, not 8


def test_quota_cooldown_denies_until_retry_after_without_a_failure(
    store: BreakerStore, clock: Clock
) -> None:
    store.record(MODEL, Outcome.QUOTA, 0.2, probe=False, retry_after_s=30)
    decision = store.allow(MODEL)
    health = store.snapshot(MODEL)
    assert (decision.reason, decision.retry_at_ms) == (Reason.QUOTA_COOLDOWN, clock.now_ms + 30_000)
    assert (health.failures, health.cooldown_until_ms, health.colour) == (
        0, clock.now_ms + 30_000, Colour.RED)
    clock.advance(30)
    assert store.allow(MODEL).allowed
    assert store.snapshot(MODEL).colour is Colour.GREEN


def test_misconfigured_sticks_until_reset(store: BreakerStore, clock: Clock) -> None:
    store.record(MODEL, Outcome.MISCONFIGURED, 0.1, probe=False, reason="402 no credits")
    clock.advance(86_400)
    assert store.allow(MODEL).reason == Reason.MISCONFIGURED
    assert store.snapshot(MODEL).misconfigured_reason == "402 no credits"
    store.reset(MODEL)
    assert store.allow(MODEL).allowed
    assert store.snapshot(MODEL).misconfigured_reason is None


def test_ignored_outcomes_never_count(store: BreakerStore) -> None:
    for _ in range(200):
        store.record(MODEL, Outcome.IGNORED, 1.0, probe=False)
    assert store.snapshot(MODEL).calls == 0
    assert store.allow(MODEL).allowed


def test_operator_overrides(store: BreakerStore) -> None:
    store.force_open(MODEL, "vendor incident")
    denied = store.allow(MODEL)
    assert (denied.allowed, denied.reason, denied.retry_at_ms) == (False, Reason.FORCED_OPEN, None)
    assert store.snapshot(MODEL).override_reason == "vendor incident"
    store.disable(MODEL)
    fail(store, 50)
    assert store.allow(MODEL).allowed
    assert store.snapshot(MODEL).calls == 0
    store.close(MODEL)
    health = store.snapshot(MODEL)
    assert (health.state, health.override_reason) == (BreakerState.CLOSED, None)
    assert [e.to_state for e in store.events(MODEL)] == [
        BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.FORCED_OPEN]


def test_slow_calls_are_counted_and_turn_the_model_yellow(make_store: StoreFactory) -> None:
    store = make_store(BreakerPolicy.for_baseline(5.0))
    for latency_s in (1.0, 2.0, 11.0, 12.0, 30.0):
        store.record(MODEL, Outcome.SUCCESS, latency_s, probe=False)
    health = store.snapshot(MODEL)
    assert (health.slow, health.failures, health.colour) == (3, 0, Colour.YELLOW)


def test_events_are_newest_first_filtered_by_model_and_bounded(store: BreakerStore) -> None:
    for number in range(5):
        store.force_open(f"model-{number % 2}", f"reason {number}")
    assert [e.reason for e in store.events("model-0", count=2)] == [
        "forced_open: reason 4", "forced_open: reason 2"]
    assert len(store.events()) == 5
    assert store.events(count=1)[0].model == "model-0"


def test_exactly_the_threshold_rate_trips(store: BreakerStore) -> None:
    for _ in range(7):
        store.record(MODEL, Outcome.SUCCESS, 1.0, probe=False)
    fail(store, 2)
    assert store.snapshot(MODEL).state is BreakerState.CLOSED  # 2/9 = 22 %
    fail(store, 1)
    assert store.snapshot(MODEL).state is BreakerState.OPEN  # 3/10 = 30 %
