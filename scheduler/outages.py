"""Riding out a dependency outage: which errors mean "unreachable", and logging each outage once.

Every long-running loop (dispatch, lease sweep, reconcile, snapshots, webhooks, heartbeats) wraps
its step in ``OutageLog.guard``: the first failure is logged as a warning, later ones of the same
outage are silent, and the first success afterwards logs that the dependency is back. The loop
then backs off (``backoff_s``) and resumes by itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from sqlalchemy import exc as sa_exc

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
)
"""What SQLAlchemy raises when the database cannot be reached (connection refused or dropped,
server shutting down, pool exhausted): worth a retry, unlike an integrity or programming error."""
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)
DEPENDENCY_ERRORS = DATABASE_ERRORS + REDIS_ERRORS + (redis.RedisError,)


def dependency_of(error: BaseException) -> str | None:
    """``"database"`` or ``"redis"`` when ``error`` means that dependency is unreachable."""
    if isinstance(error, DATABASE_ERRORS):
        return "database"
    if isinstance(error, redis.RedisError):
        return "redis"
    return None


class OutageLog:
    """Logs the start and the end of each outage of a loop's dependencies, once each."""

    def __init__(self, loop: str, logger: logging.Logger, backoff_s: float = 1.0) -> None:
        self.loop = loop
        self.log = logger
        self.backoff_s = backoff_s
        self._down: dict[str, float] = {}  # dependency -> monotonic time the outage was noticed
        self.recoveries = 0  # outages that have ended: a loop may heal what they made it miss
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return bool(self._down)

    def failed(self, error: BaseException) -> bool:
        """Note a failure; True if ``error`` is an outage (the caller backs off and goes on)."""
        dependency = dependency_of(error)
        if dependency is None:
            return False
        with self._lock:
            first = dependency not in self._down
            self._down.setdefault(dependency, time.monotonic())
        if first:
            self.log.warning("%s: %s unreachable (%s: %s); retrying every %.1fs until it is back",
                             self.loop, dependency, type(error).__name__, error, self.backoff_s)
        return True

    def succeeded(self, uses: tuple[str, ...] = ("database", "redis")) -> list[str]:
        """A step that ``uses`` these dependencies went through: their outages are over; returns
        the healed ones."""
        if not self._down:
            return []
        with self._lock:
            healed = {d: t for d, t in self._down.items() if d in uses}
            for dependency in healed:
                del self._down[dependency]
            self.recoveries += len(healed)
        for dependency, since in healed.items():
            self.log.warning("%s: %s reachable again after %.1fs", self.loop, dependency,
                             time.monotonic() - since)
        return list(healed)

    @contextmanager
    def guard(self, stop: threading.Event | None = None,
              uses: tuple[str, ...] = ("database", "redis")) -> Iterator[None]:
        """Run one step that ``uses`` these dependencies; an outage is logged (once) and backed
        off instead of raised."""
        try:
            yield
        except DEPENDENCY_ERRORS as error:
            self.failed(error)
            if stop is not None:
                stop.wait(self.backoff_s)
            else:
                time.sleep(self.backoff_s)
        else:
            self.succeeded(uses)


class RepeatedErrors:
    """Logs a loop's other errors (not an outage: a bug, bad data) with their traceback, each
    distinct one (type and message) at most once per ``every_s``; the next line says how many
    were muted in between."""

    MAX_KEPT = 256  # distinct errors remembered; older ones are forgotten first

    def __init__(self, loop: str, logger: logging.Logger, every_s: float = 60.0) -> None:
        self.loop = loop
        self.log = logger
        self.every_s = every_s
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (logged at, muted since)
        self._lock = threading.Lock()

    def error(self, error: BaseException) -> bool:
        """Log ``error`` unless the same one was logged less than ``every_s`` ago; True if
        logged."""
        key = (type(error).__name__, str(error))
        now = time.monotonic()
        with self._lock:
            logged_at, muted = self._seen.get(key, (None, 0))
            if logged_at is not None and now - logged_at < self.every_s:
                self._seen[key] = (logged_at, muted + 1)
                return False
            self._seen.pop(key, None)
            self._seen[key] = (now, 0)
            while len(self._seen) > self.MAX_KEPT:
                del self._seen[next(iter(self._seen))]
        again = f" ({muted} more times since it was last logged)" if muted else ""
        self.log.error("%s failed: %s: %s%s", self.loop, type(error).__name__, error, again,
                       exc_info=error)
        return True
