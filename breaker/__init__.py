"""The shared circuit breaker: a pure state machine and its stores (in memory, Redis).

Workers call ``allow`` before a vendor call and ``record`` after it; everything else reads
``snapshot`` and ``events``. Depends on redis-py and prometheus_client only.
"""

from breaker.health import ModelHealth
from breaker.memory import InMemoryBreakerStore
from breaker.policy import BreakerPolicy
from breaker.redis_store import RedisBreakerStore
from breaker.state import (
    BreakerState,
    Colour,
    Decision,
    MachineState,
    Outcome,
    Reason,
    Transition,
)
from breaker.store import BreakerStore, Event, unavailable

__all__ = [
    "BreakerPolicy",
    "BreakerState",
    "BreakerStore",
    "Colour",
    "Decision",
    "Event",
    "InMemoryBreakerStore",
    "MachineState",
    "ModelHealth",
    "Outcome",
    "Reason",
    "RedisBreakerStore",
    "Transition",
    "unavailable",
]
