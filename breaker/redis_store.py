"""``RedisBreakerStore``: the breaker shared by every worker on every host.

``allow`` and ``record`` are each one Lua script (EVALSHA, one round trip, atomic), clocked by
Redis ``TIME`` so hosts with skewed clocks agree. Policy values travel as ARGV with each call.
If Redis errors, ``allow`` and ``record`` fail open (see ``breaker.failopen``) and never raise;
``snapshot``, ``events`` and the operator commands do raise ``redis.RedisError``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from breaker.health import ModelHealth, health
from breaker.policy import BreakerPolicy, to_ms
from breaker.state import BreakerState, Bucket, Decision, MachineState, Outcome, Reason
from breaker.store import Event
from imagequeue import keys
from imagequeue.failopen import REDIS_FAILURES, FailOpenGuard
from imagequeue.lua import lua_source


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}


class RedisBreakerStore:
    def __init__(
        self,
        redis_client: redis.Redis,
        policy_for: Callable[[str], BreakerPolicy],
        key_prefix: str = keys.BREAKER_PREFIX,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        """``clock_ms`` replaces Redis ``TIME`` and exists for tests only (to drive time)."""
        self._redis = redis_client
        self._policy_for = policy_for
        self._prefix = key_prefix
        self._clock_ms = clock_ms
        self.guard = FailOpenGuard("breaker store")
        common = lua_source("breaker", "common.lua")
        self._allow = redis_client.register_script(common + lua_source("breaker", "allow.lua"))
        self._record = redis_client.register_script(common + lua_source("breaker", "record.lua"))
        self._override_script = redis_client.register_script(common + lua_source("breaker", "override.lua"))
        self._snapshot = redis_client.register_script(lua_source("breaker", "snapshot.lua"))

    @property
    def store_errors(self) -> int:
        """How many calls failed open because Redis errored."""
        return self.guard.errors

    def allow(self, model: str, call_id: str | None = None) -> Decision:
        try:
            allowed, probe, reason, retry_at_ms = self._allow(
                keys=self._keys(model), args=self._args(model, [call_id or ""])
            )
        except REDIS_FAILURES as error:
            self.guard.failed("allow", error)
            return Decision(allowed=True, reason=Reason.STORE_UNAVAILABLE.value)
        return Decision(
            allowed=bool(allowed),
            probe=bool(probe),
            reason=_text(reason) or None,
            retry_at_ms=None if int(retry_at_ms) < 0 else int(retry_at_ms),
        )

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
        """Returns the state after the call; CLOSED when the store is unavailable (fail open)."""
        extra = [
            outcome.value,
            to_ms(latency_s),
            int(probe),
            "" if retry_after_s is None else to_ms(retry_after_s),
            reason or "",
            call_id or "",
        ]
        try:
            mode = self._record(keys=self._keys(model), args=self._args(model, extra))
        except REDIS_FAILURES as error:
            self.guard.failed("record", error)
            return BreakerState.CLOSED
        return BreakerState(_text(mode))

    def release(self, model: str, call_id: str) -> None:
        """One ZREM; fails open (the entry expires by itself)."""
        try:
            self._redis.zrem(keys.breaker_inflight(model, self._prefix), call_id)
        except REDIS_FAILURES as error:
            self.guard.failed("release", error)

    def release_calls(self, model: str, holder_prefix: str) -> int:
        """A ZSCAN of the model's calls in flight and one ZREM; fails open (they expire)."""
        key = keys.breaker_inflight(model, self._prefix)
        try:
            ids = [member for member, _ in self._redis.zscan_iter(key, match=f"{holder_prefix}*")]
            return int(self._redis.zrem(key, *ids)) if ids else 0
        except REDIS_FAILURES as error:
            self.guard.failed("release", error)
            return 0

    def snapshot(self, model: str) -> ModelHealth:
        model_keys = self._keys(model)
        now_ms, state_flat, window_flat, in_flight_flat = self._snapshot(
            keys=[model_keys[0], model_keys[1], model_keys[3]], args=[self._now_arg()]
        )
        state = machine_state(_pairs(state_flat), _pairs(window_flat), in_flight_flat)
        return health(model, state, self._policy_for(model), int(now_ms))

    def force_open(self, model: str, reason: str) -> None:
        self._override(model, "force_open", reason)

    def disable(self, model: str) -> None:
        self._override(model, "disable")

    def close(self, model: str) -> None:
        self.reset(model)

    def reset(self, model: str) -> None:
        self._override(model, "reset")

    def events(self, model: str | None = None, count: int = 50) -> list[Event]:
        found: list[Event] = []
        newest = "+"
        page = max(count, 100)
        while len(found) < count:
            stream = keys.breaker_events(self._prefix)
            entries = self._redis.xrevrange(stream, newest, "-", page) or []
            for entry_id, fields in entries:
                event = _event({_text(k): _text(v) for k, v in (fields or {}).items()})
                if model in (None, event.model):
                    found.append(event)
                newest = f"({_text(entry_id)}"
            if len(entries) < page:
                break
        return found[:count]

    def events_after(self, after: str | None, count: int = 1000) -> tuple[list[Event], str]:
        """The transitions logged after the stream entry ``after``, oldest first (at most
        ``count``), and the entry id to pass next time. ``after=None`` returns none, and the id
        of the newest entry: the point from which a reader counts what comes next."""
        stream = keys.breaker_events(self._prefix)
        if after is None:
            newest = self._redis.xrevrange(stream, "+", "-", 1) or []
            return [], _text(newest[0][0]) if newest else "0-0"
        entries = self._redis.xrange(stream, f"({after}", "+", count) or []
        events = [_event({_text(k): _text(v) for k, v in (fields or {}).items()})
                  for _, fields in entries]
        return events, _text(entries[-1][0]) if entries else after

    def _override(self, model: str, action: str, reason: str = "") -> None:
        self._override_script(keys=self._keys(model), args=self._args(model, [action, reason]))

    def _keys(self, model: str) -> list[str]:
        return [
            keys.breaker_state(model, self._prefix),
            keys.breaker_window(model, self._prefix),
            keys.breaker_events(self._prefix),
            keys.breaker_inflight(model, self._prefix),
        ]

    def _now_arg(self) -> str:
        return "" if self._clock_ms is None else str(self._clock_ms())

    def _args(self, model: str, extra: Sequence[str | int] = ()) -> list[str | int | float]:
        p = self._policy_for(model)
        return [
            self._now_arg(), model, repr(p.failure_rate_threshold), p.window_s, p.minimum_calls,
            to_ms(p.open_duration_s), to_ms(p.slow_call_threshold_s),
            repr(p.slow_call_rate_threshold), p.half_open_probes,
            to_ms(p.quota_default_cooldown_s), to_ms(p.probe_timeout_s), keys.EVENTS_MAXLEN,
            int(p.gate), p.gate_full_calls, *extra,
        ]


def machine_state(fields: dict[str, str], window_fields: dict[str, str],
                  in_flight_flat: Sequence[Any] = ()) -> MachineState:
    """Rebuild a ``MachineState`` from the two hashes (totals derived from the buckets) and the
    in-flight ZSET (``ZRANGE ... WITHSCORES``, flat)."""
    in_flight = tuple((_text(in_flight_flat[i]), int(float(_text(in_flight_flat[i + 1]))))
                      for i in range(0, len(in_flight_flat), 2))
    seconds: dict[int, dict[str, int]] = {}
    for field, value in window_fields.items():
        kind, second = field.split(":", 1)
        seconds.setdefault(int(second), {})[kind] = int(value)
    buckets = tuple(
        Bucket(second, c.get("c", 0), c.get("f", 0), c.get("s", 0))
        for second, c in sorted(seconds.items())
    )

    def number(name: str) -> int:
        return int(fields.get(name, "0"))

    return MachineState(
        mode=BreakerState(fields.get("mode", "closed")),
        buckets=buckets,
        calls=sum(b.calls for b in buckets),
        failures=sum(b.failures for b in buckets),
        slow=sum(b.slow for b in buckets),
        open_until_ms=number("open_until_ms"),
        probe_round_until_ms=number("probe_round_until_ms"),
        probes_admitted=number("probes_admitted"),
        probe_successes=number("probe_successes"),
        cooldown_until_ms=number("cooldown_until_ms"),
        misconfigured_reason=fields.get("misconfigured_reason", ""),
        override_reason=fields.get("override_reason", ""),
        gate_limit=number("gate_limit"),
        last_success_ms=number("last_success_ms"),
        in_flight=in_flight,
    )


def _event(fields: dict[str, str]) -> Event:
    return Event(
        model=fields["model"],
        from_state=BreakerState(fields["from"]),
        to_state=BreakerState(fields["to"]),
        reason=fields["reason"],
        calls=int(fields["calls"]),
        failures=int(fields["failures"]),
        slow=int(fields["slow"]),
        at_ms=int(fields["at_ms"]),
    )
