"""Admission of each vendor call: the shared breaker first, then the vendor's limits.

Order matters. ``allow`` comes first because it is one cheap round trip that denies an open model
at once; waiting for a rate-limit token of a model whose breaker is open would only add latency.
A granted half-open probe that then finds the concurrency cap or rate limit exhausted is not
called; the breaker's probe round ends after the model's timeout plus a margin, so such a probe is
given back then rather than lost.

The concurrency slot is taken right before the call and released right after it (``released``),
never across anything else; it expires after the model's timeout plus a margin, so a crashed
worker cannot leak it. If the cap is full or the rate budget spent, the call waits a little (at
most ``vendor_slot_wait_s``), then the model is skipped: we never send a call the vendor would
answer with 429.

The slow-start gate (``breaker.gate``) is checked in the same ``allow``. A shut gate means
results are due, not that the model is bad: the job waits for them, asking again every
``GATE_POLL_S`` (one Lua call each) for at most ``gate_wait_s``, its claim committed and its
status saying what it waits for (``on_gate_wait``); then it goes on to the next model. A model
that hangs is not waited for. Each call carries an id (``job_id:uuid8``) that counts it as in
flight until its outcome is recorded, or ``released`` gives it back when there is none.

Outcomes map onto the breaker as the error taxonomy says (``providers/errors.py``, and
docs/architecture.md on the breaker):

    overloaded, server_error, timeout  -> FAILURE
    quota                              -> QUOTA (cooldown until Retry-After or the default)
    auth                               -> MISCONFIGURED (with the vendor's message)
    invalid_request, content_policy    -> IGNORED (one tenant's bad input never opens a breaker)
    success                            -> SUCCESS
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from breaker import BreakerStore, Decision, Outcome, Reason
from imagequeue import keys
from providers.catalogue import ModelSpec
from providers.errors import ErrorClass, ProviderError
from throttle import VendorLimits
from workers.router import AttemptHooks

log = logging.getLogger(__name__)

OUTCOME_OF_ERROR: dict[ErrorClass, Outcome] = {
    ErrorClass.OVERLOADED: Outcome.FAILURE,
    ErrorClass.SERVER_ERROR: Outcome.FAILURE,
    ErrorClass.TIMEOUT: Outcome.FAILURE,
    ErrorClass.QUOTA: Outcome.QUOTA,
    ErrorClass.AUTH: Outcome.MISCONFIGURED,
    ErrorClass.INVALID_REQUEST: Outcome.IGNORED,
    ErrorClass.CONTENT_POLICY: Outcome.IGNORED,
}

POLL_INTERVAL_S = 0.05
GATE_POLL_S = 0.025


def breaker_outcome(error: ProviderError | None) -> Outcome:
    return Outcome.SUCCESS if error is None else OUTCOME_OF_ERROR[error.error_class]


def clock_text(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%H:%M:%S UTC")


def denial_message(decision: Decision, misconfigured_reason: str | None = None) -> str:
    """What the attempt log says about a model the breaker denied."""
    until = f" until {clock_text(decision.retry_at_ms)}" if decision.retry_at_ms else ""
    match decision.reason:
        case Reason.OPEN:
            return f"breaker open{until}"
        case Reason.FORCED_OPEN:
            return "breaker forced open by an operator"
        case Reason.QUOTA_COOLDOWN:
            return f"quota cooldown{until}"
        case Reason.MISCONFIGURED:
            return f"misconfigured: {misconfigured_reason or 'see imgq breaker'}"
        case Reason.HALF_OPEN_BUDGET_SPENT:
            return f"breaker half-open, probes in flight{until}"
        case Reason.GATE_SHUT:
            return "slow-start gate shut: no results from the calls in flight in time"
        case Reason.HANGING:
            return "calls in flight are hanging (past the slow-call threshold, unanswered)"
        case other:
            return f"breaker denied ({other}){until}"


class CallsInFlight:
    """The calls this process was admitted to make whose outcome is not recorded yet, so that a
    worker leaving with calls under way gives their places at the slow-start gate back at once
    (a killed worker's are freed by the scheduler when the job's lease runs out, see
    ``scheduler.queue.leases.sweep``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, str] = {}  # call id -> model

    def add(self, model: str, call_id: str) -> None:
        with self._lock:
            self._calls[call_id] = model

    def discard(self, call_id: str) -> None:
        with self._lock:
            self._calls.pop(call_id, None)

    def release_all(self, breaker: BreakerStore) -> int:
        with self._lock:
            calls, self._calls = self._calls, {}
        for call_id, model in calls.items():
            try:
                breaker.release(model, call_id)
            except Exception as exc:  # noqa: BLE001 - the entries expire by themselves
                log.warning("cannot release the %s call %s (it will expire): %s", model,
                            call_id, exc)
        return len(calls)


@dataclass(frozen=True)
class LimitsConfig:
    slot_wait_s: float = 2.0
    slot_margin_s: float = 30.0
    rate_window_s: float = 60.0  # the catalogue's limits are per minute
    gate_wait_s: float = 10.0


@dataclass
class Admission(AttemptHooks):
    """Asks the breaker and the vendor limits before each call, records each outcome after it.

    After a walk, ``retry_at_ms`` is the earliest moment a denied model may be allowed again
    (None if no denial had a known end) and ``limited`` tells whether a model was skipped only
    because its cap or rate budget was full (worth another try soon). ``on_wait`` runs before
    each wait for a slot, a rate token or the slow-start gate (the run's claim commits then,
    see ``OpenClaim``); ``on_gate_wait(index, model, why)`` when the job starts waiting at a
    model's gate.
    """

    breaker: BreakerStore
    limits: VendorLimits
    job_id: str
    config: LimitsConfig = field(default_factory=LimitsConfig)
    on_wait: Callable[[], None] = lambda: None
    on_gate_wait: Callable[[int, ModelSpec, str], None] = lambda index, model, why: None
    retry_at_ms: int | None = None
    limited: bool = False
    _probes: dict[str, bool] = field(default_factory=dict)
    _holders: dict[str, str] = field(default_factory=dict)
    in_flight: CallsInFlight = field(default_factory=CallsInFlight)
    _calls: dict[str, str] = field(default_factory=dict)

    def before(self, index: int, model: ModelSpec) -> str | None:
        call_id = keys.call_holder(self.job_id)
        decision = self._allow(index, model, call_id)
        if not decision.allowed:
            self._note_retry_at(decision.retry_at_ms)
            return denial_message(decision, self._misconfigured_reason(decision, model))
        self._calls[model.id] = call_id
        self.in_flight.add(model.id, call_id)
        limit_reason = self._take_slot(model)
        if limit_reason is not None:
            self.limited = True
            self._release_call(model)
            return limit_reason
        self._probes[model.id] = decision.probe
        return None

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        call_id = self._calls.pop(model.id, None)
        if call_id is not None:
            self.in_flight.discard(call_id)
        self.breaker.record(
            model.id, breaker_outcome(error), latency_s, probe=self._probes.pop(model.id, False),
            retry_after_s=error.retry_after_s if error is not None else None,
            reason=error.message if error is not None else None, call_id=call_id)

    def released(self, model: ModelSpec) -> None:
        self._release_call(model)  # only if no outcome was recorded (an unexpected error)
        holder = self._holders.pop(model.id, None)
        if holder is None:
            return
        try:
            self.limits.release(model.id, holder)
        except Exception as exc:  # noqa: BLE001 - the slot expires by itself
            log.warning("cannot release the %s slot (it will expire): %s", model.id, exc)

    def _allow(self, index: int, model: ModelSpec, call_id: str) -> Decision:
        """The breaker's answer, after waiting up to ``gate_wait_s`` at a shut gate."""
        decision = self.breaker.allow(model.id, call_id)
        if decision.reason != Reason.GATE_SHUT:
            return decision
        give_up_at = time.monotonic() + self.config.gate_wait_s
        self.on_gate_wait(index, model, f"waiting for first results from {model.shown_name}")
        while decision.reason == Reason.GATE_SHUT and (left_s := give_up_at - time.monotonic()) > 0:
            self.on_wait()
            time.sleep(min(GATE_POLL_S, left_s))
            decision = self.breaker.allow(model.id, call_id)
        return decision

    def _release_call(self, model: ModelSpec) -> None:
        call_id = self._calls.pop(model.id, None)
        if call_id is None:
            return
        self.in_flight.discard(call_id)
        try:
            self.breaker.release(model.id, call_id)
        except Exception as exc:  # noqa: BLE001 - the entry expires by itself
            log.warning("cannot release the %s call %s (it will expire): %s", model.id, call_id,
                        exc)

    def _take_slot(self, model: ModelSpec) -> str | None:
        """Take a concurrency slot and a rate token within the wait budget; else why not."""
        give_up_at = time.monotonic() + self.config.slot_wait_s
        holder = keys.call_holder(self.job_id)
        ttl_s = model.timeout_s + self.config.slot_margin_s
        while not self.limits.acquire(model.id, model.max_concurrency, holder, ttl_s):
            if time.monotonic() + POLL_INTERVAL_S > give_up_at:
                return f"concurrency cap reached ({model.max_concurrency} calls in flight)"
            self.on_wait()
            time.sleep(POLL_INTERVAL_S)
        self._holders[model.id] = holder
        while (wait_s := self.limits.try_acquire_rate(
                model.id, model.requests_per_minute, self.config.rate_window_s)) > 0:
            if time.monotonic() + wait_s > give_up_at:
                self.released(model)
                return f"rate limit reached ({model.requests_per_minute} requests per minute)"
            self.on_wait()
            time.sleep(wait_s)
        return None

    def _note_retry_at(self, retry_at_ms: int | None) -> None:
        if retry_at_ms is not None and (self.retry_at_ms is None or retry_at_ms < self.retry_at_ms):
            self.retry_at_ms = retry_at_ms

    def _misconfigured_reason(self, decision: Decision, model: ModelSpec) -> str | None:
        if decision.reason != Reason.MISCONFIGURED:
            return None
        try:
            return self.breaker.snapshot(model.id).misconfigured_reason
        except Exception:  # noqa: BLE001 - the message is a courtesy
            return None
