"""The breaker's vocabulary: states, outcomes, decisions, transitions and the machine's state."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"  # operator override: deny everything
    DISABLED = "disabled"  # operator override: allow everything, record nothing


class Outcome(StrEnum):
    """What a call did, in the breaker's own terms (workers map the provider taxonomy onto it)."""

    SUCCESS = "success"
    FAILURE = "failure"  # overloaded, server_error, timeout
    QUOTA = "quota"  # a cooldown until retry_after_s, not a health failure
    MISCONFIGURED = "misconfigured"  # auth / no credits: sticky until an operator resets
    IGNORED = "ignored"  # invalid_request, content_policy: never counts


class Reason(StrEnum):
    """Why a call was denied (or, for the last two, why it was allowed unusually)."""

    OPEN = "open"
    FORCED_OPEN = "forced_open"
    QUOTA_COOLDOWN = "quota_cooldown"
    MISCONFIGURED = "misconfigured"
    HALF_OPEN_BUDGET_SPENT = "half_open_budget_spent"
    GATE_SHUT = "gate_shut"  # slow start: enough calls in flight until results come; wait
    HANGING = "hanging"  # calls in flight run past the slow threshold unanswered; move on
    DISABLED = "disabled"
    STORE_UNAVAILABLE = "breaker_store_unavailable"


class Colour(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


@dataclass(frozen=True)
class Decision:
    """The answer of ``allow``. ``retry_at_ms`` (epoch ms) is when a denied model may next be
    allowed (open-until, cooldown end, end of a probe round); None when only an operator can
    clear the denial (forced open, misconfigured)."""

    allowed: bool
    probe: bool = False
    reason: str | None = None
    retry_at_ms: int | None = None

    @property
    def retry_at_s(self) -> float | None:
        return None if self.retry_at_ms is None else self.retry_at_ms / 1000


@dataclass(frozen=True)
class Bucket:
    """One second of the sliding window."""

    second: int
    calls: int = 0
    failures: int = 0
    slow: int = 0


@dataclass(frozen=True)
class Transition:
    """A change worth an event: a state change, or the start of a cooldown / misconfiguration
    (then ``from_state == to_state``). Window figures are those at the moment of the change."""

    from_state: BreakerState
    to_state: BreakerState
    reason: str
    calls: int
    failures: int
    slow: int
    at_ms: int


@dataclass(frozen=True)
class MachineState:
    """Everything one model's breaker remembers. All times are epoch milliseconds; 0 = unset.

    ``calls``/``failures``/``slow`` are running totals over ``buckets`` (oldest first).
    ``in_flight`` holds the calls admitted and not yet recorded, ``(call_id, started_ms)``
    ordered by start then id (as the Redis ZSET); ``gate_limit`` is the slow-start gate's width
    (0 = never widened: ``minimum_calls``); ``last_success_ms`` the last success recorded.
    """

    mode: BreakerState = BreakerState.CLOSED
    buckets: tuple[Bucket, ...] = ()
    calls: int = 0
    failures: int = 0
    slow: int = 0
    open_until_ms: int = 0
    probe_round_until_ms: int = 0
    probes_admitted: int = 0
    probe_successes: int = 0
    cooldown_until_ms: int = 0
    misconfigured_reason: str = ""
    override_reason: str = ""
    gate_limit: int = 0
    last_success_ms: int = 0
    in_flight: tuple[tuple[str, int], ...] = ()
