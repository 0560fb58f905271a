"""The breaker's rules, as hand-worked sequences on the pure state machine (no Redis, no sleep)."""

from __future__ import annotations

import pytest

from breaker import machine
from breaker.policy import BreakerPolicy, to_ms
from breaker.state import BreakerState, Colour, Outcome, Reason
from tests.breaker.drive import PureBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("SSSSSSSFF", CLOSED),  # 2/9 = 22 %
        ("SSSSSSSFFF", OPEN),  # 3/10 = 30 %: the threshold itself trips
        ("SSSSSSSSFFF", CLOSED),  # 3/11 = 27 %
        ("FFFF", CLOSED),  # 100 % but below the 5-call minimum
        ("FFFFF", OPEN),  # 100 % at the minimum
        ("SSSSF", CLOSED),  # 20 %
        ("SSSFF", OPEN),  # 40 %
        ("SSS" + "I" * 50 + "FF", OPEN),  # ignored outcomes neither dilute nor count
        ("I" * 1000, CLOSED),
    ],
)
def test_trips_on_failure_rate_once_minimum_calls_are_in_the_window(
    pattern: str, expected: BreakerState
) -> None:
    breaker = PureBreaker()
    breaker.calls(pattern)
    assert breaker.state.mode is expected


def test_a_thousand_ignored_outcomes_never_count() -> None:
    breaker = PureBreaker()
    breaker.calls("I" * 1000)
    assert (breaker.health().calls, breaker.health().failures) == (0, 0)
    assert breaker.allow().allowed


def test_calls_older_than_the_window_leave_it() -> None:
    breaker = PureBreaker()
    breaker.calls("FFFF")
    breaker.advance(60)  # the second of those failures is now 60 s old: out of a 60 s window
    breaker.calls("F")
    assert breaker.state.mode is CLOSED
    assert breaker.health().calls == 1


def test_calls_in_the_last_second_of_the_window_still_count() -> None:
    breaker = PureBreaker()
    breaker.calls("FFFF")
    breaker.advance(59.999)
    breaker.calls("F")
    assert breaker.state.mode is OPEN
    assert breaker.transitions[-1].reason == "failure_rate"
    assert (breaker.transitions[-1].calls, breaker.transitions[-1].failures) == (5, 5)


def test_open_denies_until_the_open_duration_has_elapsed_then_admits_a_probe() -> None:
    breaker = PureBreaker()
    breaker.trip()
    opened_ms = breaker.now_ms
    breaker.advance(299.999)
    denied = breaker.allow()
    assert (denied.allowed, denied.reason) == (False, Reason.OPEN)
    assert denied.retry_at_ms == opened_ms + 300_000
    breaker.advance(0.001)
    probe = breaker.allow()
    assert probe.allowed and probe.probe
    assert breaker.state.mode is HALF_OPEN


def test_half_open_admits_exactly_the_probe_budget() -> None:
    breaker = PureBreaker()
    breaker.trip()
    breaker.advance(300)
    decisions = [breaker.allow() for _ in range(10)]
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 7
    assert all(d.probe for d in decisions[:3])
    assert {d.reason for d in decisions[3:]} == {Reason.HALF_OPEN_BUDGET_SPENT}
    assert decisions[3].retry_at_ms == breaker.now_ms + to_ms(breaker.policy.probe_timeout_s)


def test_all_probes_succeeding_closes_with_a_fresh_window() -> None:
    breaker = PureBreaker()
    breaker.calls("SSSSSFFFFF")
    breaker.advance(300)
    for _ in range(3):
        breaker.probe(Outcome.SUCCESS)
    assert breaker.state.mode is CLOSED
    assert breaker.health().calls == 0
    assert breaker.transitions[-1].reason == "probes_succeeded"
    breaker.calls("FFFF")  # a fresh window: 4 failures are below the minimum again
    assert breaker.state.mode is CLOSED


def test_two_probe_successes_are_not_enough_to_close() -> None:
    breaker = PureBreaker()
    breaker.trip()
    breaker.advance(300)
    breaker.probe(Outcome.SUCCESS)
    breaker.probe(Outcome.SUCCESS)
    assert breaker.state.mode is HALF_OPEN


def test_one_probe_failure_opens_again_for_a_new_open_period() -> None:
    breaker = PureBreaker()
    breaker.trip()
    breaker.advance(300)
    breaker.probe(Outcome.SUCCESS)
    breaker.probe(Outcome.FAILURE)
    assert breaker.state.mode is OPEN
    assert breaker.transitions[-1].reason == "probe_failed"
    assert breaker.allow().retry_at_ms == breaker.now_ms + 300_000


def test_a_probe_that_says_nothing_about_health_gives_its_slot_back() -> None:
    breaker = PureBreaker()
    breaker.trip()
    breaker.advance(300)
    breaker.probe(Outcome.IGNORED)
    for _ in range(3):
        breaker.probe(Outcome.SUCCESS)
    assert breaker.state.mode is CLOSED


def test_lost_probes_do_not_keep_the_breaker_half_open_forever() -> None:
    breaker = PureBreaker()
    breaker.trip()
    breaker.advance(300)
    for _ in range(3):
        assert breaker.allow().probe  # three workers take probes and die
    assert not breaker.allow().allowed
    breaker.advance(breaker.policy.probe_timeout_s)
    assert breaker.allow().probe


def test_quota_starts_a_cooldown_without_counting_a_failure() -> None:
    breaker = PureBreaker()
    breaker.calls("SSSS")
    breaker.record(Outcome.QUOTA, retry_after_s=42)
    denied = breaker.allow()
    assert (denied.allowed, denied.reason) == (False, Reason.QUOTA_COOLDOWN)
    assert denied.retry_at_ms == breaker.now_ms + 42_000
    assert (breaker.health().calls, breaker.health().failures) == (4, 0)
    assert breaker.health().colour is Colour.RED
    breaker.advance(42)
    assert breaker.allow().allowed
    assert breaker.state.mode is CLOSED


def test_quota_without_retry_after_uses_the_default_cooldown() -> None:
    breaker = PureBreaker(policy=BreakerPolicy(quota_default_cooldown_s=60))
    breaker.record(Outcome.QUOTA)
    assert breaker.allow().retry_at_ms == breaker.now_ms + 60_000


def test_misconfigured_sticks_until_an_operator_resets() -> None:
    breaker = PureBreaker()
    breaker.record(Outcome.MISCONFIGURED, reason="401 invalid api key")
    breaker.advance(365 * 24 * 3600)
    denied = breaker.allow()
    assert (denied.allowed, denied.reason, denied.retry_at_ms) == (
        False, Reason.MISCONFIGURED, None)
    assert breaker.health().misconfigured_reason == "401 invalid api key"
    assert breaker.health().colour is Colour.RED
    breaker.state, _ = machine.reset(breaker.state, breaker.now_ms)
    assert breaker.allow().allowed


def test_forced_open_denies_everything_with_no_retry_time() -> None:
    breaker = PureBreaker()
    breaker.state, _ = machine.force_open(breaker.state, "vendor incident", breaker.now_ms)
    breaker.advance(10_000)
    denied = breaker.allow()
    assert (denied.allowed, denied.reason, denied.retry_at_ms) == (
        False, Reason.FORCED_OPEN, None)
    assert breaker.health().colour is Colour.RED


def test_disabled_allows_everything_and_records_nothing() -> None:
    breaker = PureBreaker()
    breaker.state, _ = machine.disable(breaker.state, breaker.now_ms)
    breaker.calls("F" * 100)
    assert breaker.allow().allowed
    assert breaker.health().calls == 0
    assert breaker.state.mode is BreakerState.DISABLED


def test_a_slow_success_is_a_success_and_slow_calls_alone_do_not_trip_by_default() -> None:
    breaker = PureBreaker(policy=BreakerPolicy.for_baseline(10.0))
    breaker.calls("S" * 100, latency_s=25.0)
    health = breaker.health()
    assert breaker.state.mode is CLOSED
    assert (health.calls, health.failures, health.slow) == (100, 0, 100)


def test_slow_calls_trip_when_the_slow_rate_threshold_is_configured_lower() -> None:
    breaker = PureBreaker(policy=BreakerPolicy.for_baseline(10.0, slow_call_rate_threshold=0.8))
    breaker.calls("SSSS", latency_s=20.001)
    breaker.calls("S", latency_s=20.0)  # exactly the threshold is not slow: 4/5 = 80 %
    assert breaker.state.mode is OPEN
    assert breaker.transitions[-1].reason == "slow_call_rate"


def test_for_baseline_sets_the_slow_threshold_to_twice_the_baseline() -> None:
    policy = BreakerPolicy.for_baseline(7.5, minimum_calls=10)
    assert (policy.slow_call_threshold_s, policy.minimum_calls) == (15.0, 10)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("fresh", Colour.GREEN),
        ("fast calls", Colour.GREEN),
        ("half of the calls slow", Colour.YELLOW),
        ("a few slow calls", Colour.GREEN),
        ("half_open", Colour.YELLOW),
        ("open", Colour.RED),
    ],
)
def test_health_colour(setup: str, expected: Colour) -> None:
    breaker = PureBreaker(policy=BreakerPolicy.for_baseline(10.0))
    if setup == "fast calls":
        breaker.calls("S" * 10, latency_s=5.0)
    elif setup == "half of the calls slow":
        breaker.calls("S" * 5, latency_s=5.0)
        breaker.calls("S" * 5, latency_s=30.0)
    elif setup == "a few slow calls":
        breaker.calls("S" * 6, latency_s=5.0)
        breaker.calls("S" * 4, latency_s=30.0)
    elif setup in ("half_open", "open"):
        breaker.trip()
        if setup == "half_open":
            breaker.advance(300)
    assert breaker.health().colour is expected


def test_policy_rejects_a_fractional_window() -> None:
    with pytest.raises(ValueError, match="window_s"):
        BreakerPolicy(window_s=1.5)  # type: ignore[arg-type]
