"""Every Redis key the breaker and the vendor limits use, with the layout version in the prefix.

A layout change bumps ``v1`` so new code can never misread old keys. Model names always end the
key, so two models can never share one.
"""

from __future__ import annotations

VERSION_PREFIX = "imgq:v1"
BREAKER_PREFIX = f"{VERSION_PREFIX}:breaker"
LIMITS_PREFIX = f"{VERSION_PREFIX}:limits"
EVENTS_MAXLEN = 10_000


def breaker_state(model: str, prefix: str = BREAKER_PREFIX) -> str:
    """Hash: the machine state of one model (see lua/common.lua for its fields)."""
    return f"{prefix}:state:{model}"


def breaker_window(model: str, prefix: str = BREAKER_PREFIX) -> str:
    """Hash: the sliding window, fields ``c:<second>``, ``f:<second>``, ``s:<second>``."""
    return f"{prefix}:window:{model}"


def breaker_events(prefix: str = BREAKER_PREFIX) -> str:
    """Stream: every transition of every model (MAXLEN ~ EVENTS_MAXLEN)."""
    return f"{prefix}:events"


def concurrency_holders(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """Sorted set: holder id -> expiry (epoch ms) of each held concurrency slot."""
    return f"{prefix}:concurrency:{model}"


def rate_window(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """Sorted set: call id -> call time (epoch ms) of the calls in the last minute."""
    return f"{prefix}:rate:{model}"


def rate_seq(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """String: counter giving each counted call a unique id."""
    return f"{prefix}:rate:{model}:seq"
