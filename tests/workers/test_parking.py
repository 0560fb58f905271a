"""When a job that found no model walks again."""

from __future__ import annotations

from providers.errors import ErrorClass, ProviderError
from workers.parking import MIN_PARK_MS, not_before_ms
from workers.router import RouteOutcome

NOW_MS = 1_700_000_000_000
BACKOFF_S = 5.0
FAR_DEADLINE_MS = NOW_MS + 3_600_000


def failed() -> RouteOutcome:
    return RouteOutcome(last_failure=ProviderError(ErrorClass.OVERLOADED, "high demand"))


def test_all_denied_waits_for_the_earliest_end_of_a_denial() -> None:
    at = not_before_ms(RouteOutcome(), NOW_MS + 42_000, False, NOW_MS, BACKOFF_S, FAR_DEADLINE_MS)
    assert at == NOW_MS + 42_000


def test_a_failing_model_may_answer_sooner_so_the_backoff_wins_if_earlier() -> None:
    at = not_before_ms(failed(), NOW_MS + 42_000, False, NOW_MS, BACKOFF_S, FAR_DEADLINE_MS)
    assert at == NOW_MS + int(BACKOFF_S * 1000)


def test_a_busy_model_is_tried_again_after_the_backoff() -> None:
    at = not_before_ms(RouteOutcome(), None, True, NOW_MS, BACKOFF_S, FAR_DEADLINE_MS)
    assert at == NOW_MS + int(BACKOFF_S * 1000)


def test_denials_without_a_known_end_wait_the_backoff() -> None:
    at = not_before_ms(RouteOutcome(), None, False, NOW_MS, BACKOFF_S, FAR_DEADLINE_MS)
    assert at == NOW_MS + int(BACKOFF_S * 1000)


def test_never_parked_past_the_deadline() -> None:
    deadline_ms = NOW_MS + 10_000
    at = not_before_ms(RouteOutcome(), NOW_MS + 42_000, False, NOW_MS, BACKOFF_S, deadline_ms)
    assert at == deadline_ms


def test_never_in_a_tight_loop() -> None:
    at = not_before_ms(RouteOutcome(), NOW_MS - 5, False, NOW_MS, BACKOFF_S, FAR_DEADLINE_MS)
    assert at == NOW_MS + MIN_PARK_MS
