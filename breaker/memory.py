"""``InMemoryBreakerStore``: the pure machine behind a lock, with an injectable clock.

The reference implementation of the ``BreakerStore`` contract, and the "one breaker per
process" mode (nothing shared between processes).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice

from breaker import gate, machine
from breaker.health import ModelHealth, health
from breaker.policy import BreakerPolicy
from breaker.state import BreakerState, Decision, MachineState, Outcome, Transition
from breaker.store import Event
from imagequeue.keys import EVENTS_MAXLEN


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class InMemoryBreakerStore:
    def __init__(
        self,
        policy_for: Callable[[str], BreakerPolicy],
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self._policy_for = policy_for
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._states: dict[str, MachineState] = {}
        self._events: deque[Event] = deque(maxlen=EVENTS_MAXLEN)

    def allow(self, model: str, call_id: str | None = None) -> Decision:
        with self._lock:
            now_ms = self._clock_ms()
            before = self._states.get(model, MachineState())
            decision, after = machine.allow(before, self._policy_for(model), now_ms, call_id)
            self._states[model] = after
            if after.mode is not before.mode:
                self._log(model, Transition(before.mode, after.mode, "open_duration_elapsed",
                                            after.calls, after.failures, after.slow, now_ms))
            return decision

    def record(
        self,
        model: str,
        outcome: Outcome,
        latency_s: float,
        *,
        probe: bool,
        retry_after_s: float | None = None,
        reason: str | None = None,
        call_id: str | None = None,
    ) -> BreakerState:
        with self._lock:
            state, transition = machine.record(
                self._states.get(model, MachineState()), self._policy_for(model), outcome,
                latency_s, self._clock_ms(), probe, retry_after_s=retry_after_s, reason=reason,
                call_id=call_id,
            )
            self._states[model] = state
            self._log(model, transition)
            return state.mode

    def release(self, model: str, call_id: str) -> None:
        with self._lock:
            state = self._states.get(model)
            if state is not None:
                self._states[model] = gate.release(state, call_id)

    def release_calls(self, model: str, holder_prefix: str) -> int:
        with self._lock:
            state = self._states.get(model)
            if state is None:
                return 0
            held = [call_id for call_id, _ in state.in_flight if call_id.startswith(holder_prefix)]
            for call_id in held:
                state = gate.release(state, call_id)
            self._states[model] = state
            return len(held)

    def snapshot(self, model: str) -> ModelHealth:
        with self._lock:
            state = self._states.get(model, MachineState())
            return health(model, state, self._policy_for(model), self._clock_ms())

    def force_open(self, model: str, reason: str) -> None:
        self._override(model, lambda s, now_ms: machine.force_open(s, reason, now_ms))

    def disable(self, model: str) -> None:
        self._override(model, machine.disable)

    def close(self, model: str) -> None:
        self.reset(model)

    def reset(self, model: str) -> None:
        self._override(model, machine.reset)

    def events(self, model: str | None = None, count: int = 50) -> list[Event]:
        with self._lock:
            newest_first = (e for e in reversed(self._events) if model in (None, e.model))
            return list(islice(newest_first, count))

    def _override(
        self, model: str, change: Callable[[MachineState, int], tuple[MachineState, Transition]]
    ) -> None:
        with self._lock:
            state, transition = change(self._states.get(model, MachineState()), self._clock_ms())
            self._states[model] = state
            self._log(model, transition)

    def _log(self, model: str, transition: Transition | None) -> None:
        if transition is not None:
            self._events.append(Event.of(model, transition))
