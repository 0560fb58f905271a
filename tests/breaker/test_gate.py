"""The slow-start gate and hang detection, against the in-memory reference and the Lua store,
with a driven clock."""

from __future__ import annotations

import itertools

import pytest

from breaker import BreakerPolicy, BreakerState, BreakerStore, Colour, Outcome, Reason
from tests.breaker.conftest import Clock, StoreFactory

MODEL = "seedream-4-5"
GATED = BreakerPolicy(minimum_calls=5, gate=True, gate_full_calls=20, window_s=10,
                      slow_call_threshold_s=2.0, probe_timeout_s=30.0, open_duration_s=5.0,
                      half_open_probes=2)
ids = (f"job-{k}:call" for k in itertools.count())


@pytest.fixture()
def gated(make_store: StoreFactory) -> BreakerStore:
    return make_store(GATED)


def start(store: BreakerStore, count: int) -> list[str]:
    """Admit up to ``count`` calls; the ids of those admitted."""
    admitted = []
    for _ in range(count):
        call_id = next(ids)
        if store.allow(MODEL, call_id).allowed:
            admitted.append(call_id)
    return admitted


def finish(store: BreakerStore, call_ids: list[str], outcome: Outcome,
           latency_s: float = 0.5) -> None:
    for call_id in call_ids:
        store.record(MODEL, outcome, latency_s, probe=False, call_id=call_id)


def test_a_cold_model_admits_minimum_calls_then_waits_for_evidence(gated: BreakerStore) -> None:
    admitted = start(gated, 5)
    denied = gated.allow(MODEL, next(ids))
    health = gated.snapshot(MODEL)
    assert len(admitted) == 5
    assert (denied.allowed, denied.reason, denied.retry_at_ms) == (False, Reason.GATE_SHUT, None)
    assert (health.gate_limit, health.in_flight, health.slow_running, health.hanging) == (
        5, 5, 0, False)
    assert health.colour is Colour.GREEN  # nothing says the model is bad


def test_each_success_widens_the_gate_by_one_until_it_is_fully_open(gated: BreakerStore) -> None:
    widths = []
    in_flight = start(gated, 5)
    while gated.snapshot(MODEL).gate_limit is not None:
        finish(gated, in_flight, Outcome.SUCCESS)  # one round trip: every call answers
        widths.append(gated.snapshot(MODEL).gate_limit)
        in_flight = start(gated, 100)
        assert len(in_flight) == widths[-1] or widths[-1] is None
    assert widths == [10, None]  # 5 -> 10 -> 20 = full: doubling per round trip
    assert len(in_flight) == 100  # fully open: the gate does not limit


def test_a_failure_narrows_the_gate_but_never_below_minimum_calls(gated: BreakerStore) -> None:
    finish(gated, start(gated, 5), Outcome.SUCCESS)
    finish(gated, start(gated, 10), Outcome.SUCCESS)
    finish(gated, start(gated, 1), Outcome.SUCCESS)  # window 16 calls, width 20 - full
    finish(gated, start(gated, 1), Outcome.FAILURE)
    assert gated.snapshot(MODEL).gate_limit == 19
    for _ in range(20):  # 1 of 6 failing stays under the failure threshold
        finish(gated, start(gated, 1), Outcome.FAILURE)
        finish(gated, start(gated, 5), Outcome.SUCCESS)
        assert gated.snapshot(MODEL).state is BreakerState.CLOSED
    for _ in range(30):
        gated.record(MODEL, Outcome.FAILURE, 0.5, probe=False)
        if gated.snapshot(MODEL).state is not BreakerState.CLOSED:
            break
    assert gated.snapshot(MODEL).state is BreakerState.OPEN  # the failure rate opens it as today


def test_as_many_failures_as_successes_keep_the_gate_at_its_minimum(
        make_store: StoreFactory) -> None:
    store = make_store(BreakerPolicy(minimum_calls=5, gate=True, failure_rate_threshold=1.0))
    for _ in range(3):
        finish(store, start(store, 5), Outcome.SUCCESS)
        assert store.snapshot(MODEL).gate_limit == 10
        finish(store, start(store, 5), Outcome.FAILURE)
        assert store.snapshot(MODEL).gate_limit == 5


def test_a_dead_model_costs_minimum_calls_then_opens(gated: BreakerStore) -> None:
    admitted = start(gated, 50)
    assert len(admitted) == 5
    for k, call_id in enumerate(admitted[:4]):  # each failure frees no place for a new call
        finish(gated, [call_id], Outcome.FAILURE)
        assert gated.snapshot(MODEL).gate_limit == 5 - (k + 1)
        assert start(gated, 10) == []
    finish(gated, admitted[4:], Outcome.FAILURE)
    assert gated.snapshot(MODEL).state is BreakerState.OPEN


def test_during_a_cold_start_a_success_frees_a_place_and_a_failure_does_not(
        gated: BreakerStore) -> None:
    admitted = start(gated, 5)
    finish(gated, admitted[:1], Outcome.SUCCESS)
    finish(gated, admitted[1:2], Outcome.FAILURE)
    assert gated.snapshot(MODEL).gate_limit == 4
    assert len(start(gated, 10)) == 1


def test_after_an_idle_spell_and_after_closing_the_gate_starts_over(
        gated: BreakerStore, clock: Clock) -> None:
    for _ in range(3):
        finish(gated, start(gated, 100), Outcome.SUCCESS)
    assert gated.snapshot(MODEL).gate_limit is None
    clock.advance(11)  # the window empties
    assert gated.snapshot(MODEL).gate_limit == 5
    assert len(start(gated, 100)) == 5

    gated.reset(MODEL)
    finish(gated, start(gated, 5), Outcome.FAILURE)
    clock.advance(5)
    for _ in range(2):
        decision = gated.allow(MODEL, call_id := next(ids))
        assert decision.probe
        gated.record(MODEL, Outcome.SUCCESS, 0.5, probe=True, call_id=call_id)
    assert gated.snapshot(MODEL).state is BreakerState.CLOSED
    assert gated.snapshot(MODEL).gate_limit == 5
    assert len(start(gated, 100)) == 5


def test_a_call_running_past_the_slow_threshold_makes_the_model_hang(
        gated: BreakerStore, clock: Clock) -> None:
    finish(gated, start(gated, 5), Outcome.SUCCESS)
    finish(gated, start(gated, 10), Outcome.SUCCESS)
    hung = start(gated, 3)
    clock.advance(2.0)
    assert not gated.snapshot(MODEL).hanging  # at the threshold, not past it
    clock.advance(0.001)
    health = gated.snapshot(MODEL)
    assert (health.hanging, health.slow_running, health.in_flight, health.colour) == (
        True, 3, 3, Colour.YELLOW)
    assert health.gate_limit == 5  # narrowed to its minimum
    denied = gated.allow(MODEL, next(ids))
    assert (denied.allowed, denied.reason) == (False, Reason.HANGING)
    finish(gated, hung, Outcome.FAILURE, latency_s=30)  # they run on to their timeout
    health = gated.snapshot(MODEL)
    assert (health.hanging, health.in_flight, health.gate_limit) == (False, 0, 5)


def test_a_slow_call_with_successes_after_it_is_not_a_hang(
        gated: BreakerStore, clock: Clock) -> None:
    finish(gated, start(gated, 5), Outcome.SUCCESS)
    slow = start(gated, 1)
    clock.advance(2.5)
    assert gated.snapshot(MODEL).hanging
    gated.record(MODEL, Outcome.SUCCESS, 0.5, probe=False)  # another call answers meanwhile
    health = gated.snapshot(MODEL)
    assert (health.hanging, health.slow_running, health.colour) == (False, 1, Colour.GREEN)
    assert gated.allow(MODEL, next(ids)).allowed
    finish(gated, slow, Outcome.SUCCESS, latency_s=3.0)


def test_calls_never_recorded_expire_after_the_timeout_and_margin(
        gated: BreakerStore, clock: Clock) -> None:
    start(gated, 5)  # their workers die
    clock.advance(30)
    assert gated.snapshot(MODEL).in_flight == 5
    assert gated.allow(MODEL, next(ids)).reason == Reason.HANGING
    clock.advance(0.001)
    assert gated.snapshot(MODEL).in_flight == 0
    assert len(start(gated, 10)) == 5


def test_release_frees_a_place_without_an_outcome(gated: BreakerStore) -> None:
    admitted = start(gated, 5)
    gated.release(MODEL, admitted[0])
    health = gated.snapshot(MODEL)
    assert (health.in_flight, health.calls) == (4, 0)
    assert len(start(gated, 5)) == 1


def test_release_calls_frees_every_place_of_one_dead_job_and_no_other(
        gated: BreakerStore) -> None:
    assert gated.allow(MODEL, "dead-job:a1").allowed and gated.allow(MODEL, "dead-job:b2").allowed
    others = start(gated, 3)
    assert gated.release_calls(MODEL, "dead-job:") == 2
    assert gated.release_calls(MODEL, "dead-job:") == 0
    assert gated.release_calls("never-called", "dead-job:") == 0
    assert gated.snapshot(MODEL).in_flight == len(others) == 3
    assert len(start(gated, 5)) == 2  # the dead job's two places are free again


def test_without_the_gate_nothing_is_tracked_or_limited(store: BreakerStore,
                                                        clock: Clock) -> None:
    assert len(start(store, 50)) == 50
    clock.advance(3600)
    health = store.snapshot(MODEL)
    assert (health.gate_limit, health.in_flight, health.hanging) == (None, 0, False)
