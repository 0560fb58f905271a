"""Property: the Lua store and the pure machine agree on every decision, state and event.

Random sequences of allow / record / operator commands / time steps are applied to an
InMemoryBreakerStore (the pure machine) and to a RedisBreakerStore driven by the same explicit
clock (the test-only ``clock_ms`` override of Redis TIME).
"""

from __future__ import annotations

import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breaker import BreakerPolicy, InMemoryBreakerStore, Outcome, RedisBreakerStore
from tests.breaker.conftest import Clock

POLICY = BreakerPolicy(
    window_s=2, minimum_calls=3, open_duration_s=1.0, half_open_probes=2,
    slow_call_threshold_s=1.0, slow_call_rate_threshold=0.7, quota_default_cooldown_s=2.0,
    probe_timeout_s=3.0,
)

# Weighted by repetition: mostly calls and time steps; sticky operator commands and
# misconfiguration are rare, or every sequence would end in a state that nothing leaves.
records = st.tuples(
    st.just("record"),
    st.sampled_from([*Outcome] + [Outcome.SUCCESS, Outcome.FAILURE, Outcome.QUOTA] * 4),
    st.sampled_from([0.2, 1.0, 1.001, 3.0]),
    st.booleans(),
    st.sampled_from([None, 0.5, 2.5]),
)
calls = st.tuples(
    st.just("call"),
    st.sampled_from([Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED]),
    st.sampled_from([0.2, 1.0, 1.001, 3.0]),
)
advances = st.tuples(st.just("advance"), st.sampled_from([1, 499, 500, 999, 1000, 1500, 3001]))
operator_commands = st.tuples(st.sampled_from(["reset", "reset", "force_open", "disable"]))
weighted = [(calls, 12), (advances, 6), (records, 3), (st.tuples(st.just("allow")), 2),
            (operator_commands, 1)]
operations = st.lists(
    st.sampled_from([s for s, weight in weighted for _ in range(weight)]).flatmap(lambda s: s),
    min_size=20,
    max_size=60,
)


def apply(store: Any, model: str, operation: tuple[Any, ...]) -> Any:
    match operation:
        case ("allow",):
            return store.allow(model)
        case ("call", outcome, latency_s):  # a worker's allow, then record as it was told
            decision = store.allow(model)
            if not decision.allowed:
                return decision, None
            return decision, store.record(model, outcome, latency_s, probe=decision.probe)
        case ("record", outcome, latency_s, probe, retry_after_s):
            return store.record(model, outcome, latency_s, probe=probe,
                                retry_after_s=retry_after_s, reason="auth")
        case ("reset",):
            return store.reset(model)
        case ("force_open",):
            return store.force_open(model, "drill")
        case ("disable",):
            return store.disable(model)
    raise AssertionError(operation)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=operations)
def test_lua_store_and_pure_machine_agree(
    redis_client: redis.Redis, operations: list[tuple[Any, ...]]
) -> None:
    clock = Clock()
    model = f"model-{uuid.uuid4().hex}"
    pure = InMemoryBreakerStore(lambda _m: POLICY, clock_ms=clock)
    lua = RedisBreakerStore(redis_client, lambda _m: POLICY, clock_ms=clock)
    for step, operation in enumerate(operations):
        if operation[0] == "advance":
            clock.now_ms += operation[1]
            continue
        expected, actual = apply(pure, model, operation), apply(lua, model, operation)
        assert actual == expected, (step, operation)
        assert lua.snapshot(model) == pure.snapshot(model), (step, operation)
    assert lua.events(model, count=100) == pure.events(model, count=100)
    assert lua.store_errors == 0


GATED_POLICY = BreakerPolicy(
    window_s=2, minimum_calls=3, open_duration_s=1.0, half_open_probes=2,
    slow_call_threshold_s=1.0, failure_rate_threshold=0.5, quota_default_cooldown_s=2.0,
    probe_timeout_s=3.0, gate=True, gate_full_calls=6,
)
starts = st.tuples(st.just("start"))
finishes = st.tuples(
    st.just("finish"), st.integers(min_value=0, max_value=20),
    st.sampled_from([Outcome.SUCCESS, Outcome.SUCCESS, Outcome.SUCCESS, Outcome.FAILURE,
                     Outcome.IGNORED, Outcome.QUOTA]),
    st.sampled_from([0.2, 1.0, 1.001, 3.0]),
)
releases = st.tuples(st.just("release"), st.integers(min_value=0, max_value=20))
gated_weighted = [(starts, 10), (finishes, 8), (advances, 5), (calls, 4), (releases, 1),
                  (operator_commands, 1)]
gated_operations = st.lists(
    st.sampled_from([s for s, weight in gated_weighted for _ in range(weight)])
    .flatmap(lambda s: s),
    min_size=20,
    max_size=80,
)


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=gated_operations)
def test_lua_store_and_pure_machine_agree_on_the_gate_and_calls_in_flight(
    redis_client: redis.Redis, operations: list[tuple[Any, ...]]
) -> None:
    """Calls overlap here: each ``start`` admits a call that a later ``finish`` records (or a
    ``release`` drops, or nothing does and it expires), as workers running side by side do."""
    clock = Clock()
    model = f"model-{uuid.uuid4().hex}"
    pure = InMemoryBreakerStore(lambda _m: GATED_POLICY, clock_ms=clock)
    lua = RedisBreakerStore(redis_client, lambda _m: GATED_POLICY, clock_ms=clock)
    running: list[tuple[str, bool]] = []
    for step, operation in enumerate(operations):
        match operation:
            case ("advance", ms):
                clock.now_ms += ms
                continue
            case ("start",):
                call_id = f"job-{step}:{uuid.uuid4().hex[:8]}"
                expected, actual = pure.allow(model, call_id), lua.allow(model, call_id)
                if expected.allowed:
                    running.append((call_id, expected.probe))
            case ("finish", k, outcome, latency_s) if running:
                call_id, probe = running.pop(k % len(running))
                expected = pure.record(model, outcome, latency_s, probe=probe, call_id=call_id)
                actual = lua.record(model, outcome, latency_s, probe=probe, call_id=call_id)
            case ("release", k) if running:
                call_id, _ = running.pop(k % len(running))
                expected, actual = pure.release(model, call_id), lua.release(model, call_id)
            case ("finish", *_) | ("release", _):
                continue
            case _:
                expected, actual = apply(pure, model, operation), apply(lua, model, operation)
        assert actual == expected, (step, operation)
        assert lua.snapshot(model) == pure.snapshot(model), (step, operation)
    assert lua.events(model, count=100) == pure.events(model, count=100)
    assert lua.store_errors == 0
