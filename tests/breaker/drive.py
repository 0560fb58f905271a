"""A pure breaker with its own hand-moved clock, for the state-machine tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from breaker import machine
from breaker.health import ModelHealth, health
from breaker.policy import BreakerPolicy, to_ms
from breaker.state import Decision, MachineState, Outcome, Transition

T0_MS = 1_700_000_000_000  # on a second boundary


@dataclass
class PureBreaker:
    policy: BreakerPolicy = field(default_factory=BreakerPolicy)
    now_ms: int = T0_MS
    state: MachineState = field(default_factory=MachineState)
    transitions: list[Transition] = field(default_factory=list)

    def advance(self, seconds: float) -> None:
        self.now_ms += to_ms(seconds)

    def allow(self) -> Decision:
        decision, self.state = machine.allow(self.state, self.policy, self.now_ms)
        return decision

    def record(
        self,
        outcome: Outcome,
        latency_s: float = 1.0,
        probe: bool = False,
        retry_after_s: float | None = None,
        reason: str | None = None,
    ) -> None:
        self.state, transition = machine.record(
            self.state, self.policy, outcome, latency_s, self.now_ms, probe,
            retry_after_s=retry_after_s, reason=reason,
        )
        if transition is not None:
            self.transitions.append(transition)

    def calls(self, pattern: str, latency_s: float = 1.0) -> None:
        """Record closed-state calls: S = success, F = failure, I = ignored."""
        outcomes = {"S": Outcome.SUCCESS, "F": Outcome.FAILURE, "I": Outcome.IGNORED}
        for letter in pattern:
            self.record(outcomes[letter], latency_s)

    def trip(self) -> None:
        self.calls("FFFFF")

    def probe(self, outcome: Outcome) -> None:
        decision = self.allow()
        assert decision.allowed and decision.probe
        self.record(outcome, probe=True)

    def health(self) -> ModelHealth:
        return health("m", self.state, self.policy, self.now_ms)
