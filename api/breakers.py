"""Breakers as operators see them, shared by the admin API, ``/v1/status`` and ``imgq breaker``.

One plain-dict shape per model (state, health colour, window figures, the slow-start gate's limit
(``gate_limit``, null when it does not limit) and the calls in flight, last transitions), so the
HTTP answer and ``imgq breaker --json`` are the same document. Operator actions go through
``apply_action`` so the API and the CLI cannot drift apart in what ``open`` or ``reset`` means.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import redis

from breaker import BreakerStore, Event, ModelHealth

Action = Literal["open", "close", "disable", "reset"]
ACTIONS: tuple[Action, ...] = ("open", "close", "disable", "reset")
DEFAULT_OPEN_REASON = "opened by an operator"
RECENT_EVENTS = 500
"""Transitions read, newest first, to find each model's last few in a listing of all models."""


class UnknownModel(LookupError):
    def __init__(self, model: str, known: Iterable[str]) -> None:
        self.model = model
        self.known = sorted(known)
        super().__init__(f"unknown model {model!r}; known models: {', '.join(self.known)}")


def iso_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def event_dict(event: Event) -> dict[str, Any]:
    return {"from": event.from_state.value, "to": event.to_state.value, "reason": event.reason,
            "calls": event.calls, "failures": event.failures, "slow": event.slow,
            "at_ms": event.at_ms, "at": iso_ms(event.at_ms)}


def health_dict(health: ModelHealth, events: list[Event]) -> dict[str, Any]:
    return {
        "model": health.model,
        "state": health.state.value,
        "colour": health.colour.value,
        "window": {"calls": health.calls, "failures": health.failures, "slow": health.slow,
                   "failure_rate": round(health.failure_rate, 4)},
        "open_until": iso_ms(health.open_until_ms),
        "open_until_ms": health.open_until_ms,
        "cooldown_until": iso_ms(health.cooldown_until_ms),
        "cooldown_until_ms": health.cooldown_until_ms,
        "misconfigured_reason": health.misconfigured_reason,
        "override_reason": health.override_reason,
        "probes_admitted": health.probes_admitted,
        "gate_limit": health.gate_limit,
        "in_flight": health.in_flight,
        "slow_running": health.slow_running,
        "hanging": health.hanging,
        "last_transitions": [event_dict(e) for e in events],
    }


def check_model(model: str, known: Iterable[str]) -> None:
    known = list(known)
    if model not in known:
        raise UnknownModel(model, known)


def model_report(store: BreakerStore, model: str, transitions: int = 5) -> dict[str, Any]:
    """One model's breaker; raises ``redis.RedisError`` when the shared store is unreachable."""
    return health_dict(store.snapshot(model), store.events(model, transitions))


def all_reports(store: BreakerStore, models: Iterable[str],
                transitions: int = 5) -> dict[str, dict[str, Any]]:
    """Every model's breaker, with its last ``transitions`` among the recent stream entries."""
    recent = store.events(None, RECENT_EVENTS) if transitions > 0 else []
    reports = {}
    for model in models:
        mine = [e for e in recent if e.model == model][:transitions]
        reports[model] = health_dict(store.snapshot(model), mine)
    return reports


def apply_action(store: BreakerStore, model: str, action: Action, reason: str | None = None) -> None:
    """``open`` forces the breaker open (every call denied) until ``close`` or ``reset``;
    ``disable`` lets every call through and records nothing; ``close`` and ``reset`` return to a
    closed breaker with an empty window, cooldown and misconfiguration cleared."""
    if action == "open":
        store.force_open(model, reason or DEFAULT_OPEN_REASON)
    elif action == "disable":
        store.disable(model)
    elif action == "close":
        store.close(model)
    elif action == "reset":
        store.reset(model)
    else:  # pragma: no cover - Action is a closed set
        raise ValueError(f"unknown action {action!r}")


def status_fields(store: BreakerStore, model: str) -> dict[str, str | None]:
    """A model's breaker state and health colour for ``/v1/status``; None when Redis is down
    (the public status must still answer)."""
    try:
        health = store.snapshot(model)
    except (redis.RedisError, OSError):
        return {"breaker_state": None, "health": None}
    return {"breaker_state": health.state.value, "health": health.colour.value}

