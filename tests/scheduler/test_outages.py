"""Riding out outages: ``OutageLog`` logs each outage of a dependency once when it starts and once
when it ends, and the scheduler's and workers' loops built on it back off and resume by themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import create_engine
from sqlalchemy import exc as sa_exc

from scheduler.batches import rollup
from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors, dependency_of
from scheduler.webhooks import outbox
from scheduler.webhooks.outbox import WebhookPolicy, WebhookSender
from storage.db import make_sessionmaker, migrate
from storage.models import WebhookDelivery
from storage.tenants import create_tenant

LOGGER = "tests.outages"


def database_down() -> sa_exc.OperationalError:
    return sa_exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def redis_down() -> redis.ConnectionError:
    return redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def lines(caplog: pytest.LogCaptureFixture, text: str, logger: str | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if text in r.getMessage() and (logger is None or r.name == logger)]


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are remembered (no test sleeps its backoff)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits_s: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits_s.append(0.0 if timeout is None else timeout)
        return self.is_set()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


# --- OutageLog ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "dependency"), [
    (database_down(), "database"),
    (sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")), "database"),
    (sa_exc.TimeoutError("QueuePool limit of size 10 overflow 20 reached"), "database"),
    (redis_down(), "redis"),
    (redis.TimeoutError("Timeout reading from socket"), "redis"),
    (ValueError("bad row"), None),
    (sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")), None),
])
def test_which_errors_mean_a_dependency_is_unreachable(error: BaseException,
                                                       dependency: str | None) -> None:
    assert dependency_of(error) == dependency
    assert isinstance(error, DEPENDENCY_ERRORS) is (dependency is not None)


def test_an_outage_is_logged_once_however_many_steps_fail_and_once_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    outages = OutageLog("dispatch", logging.getLogger(LOGGER), backoff_s=0.5)
    stop = RecordingStop()
    caplog.set_level(logging.INFO, logger=LOGGER)

    # Given Redis down for 50 steps
    for _ in range(50):
        with outages.guard(stop, uses=("redis",)):
            raise redis_down()
    # Then one warning, naming the loop, the dependency and the error, and each step backed off
    assert outages.down
    assert lines(caplog, "unreachable") == [
        "dispatch: redis unreachable (ConnectionError: Error 111 connecting to 127.0.0.1:6379. "
        "Connection refused.); retrying every 0.5s until it is back"]
    assert stop.waits_s == [0.5] * 50

    # When a step goes through, one line says so; further steps log nothing
    for _ in range(5):
        with outages.guard(stop, uses=("redis",)):
            pass
    assert not outages.down
    assert len(lines(caplog, "redis reachable again after")) == 1
    assert len(caplog.records) == 2
    assert stop.waits_s == [0.5] * 50  # no backoff after a step that went through


def test_a_second_outage_is_logged_again(caplog: pytest.LogCaptureFixture) -> None:
    outages = OutageLog("sweep", logging.getLogger(LOGGER), backoff_s=0.0)
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(2):
        assert outages.failed(database_down()) is True
        assert outages.failed(database_down()) is True
        assert outages.succeeded(("database",)) == ["database"]
    assert [r.getMessage().split(" (")[0].split(" after")[0] for r in caplog.records] == [
        "sweep: database unreachable", "sweep: database reachable again"] * 2


def test_errors_that_are_not_outages_propagate_and_are_not_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    outages = OutageLog("webhooks", logging.getLogger(LOGGER), backoff_s=0.0)
    caplog.set_level(logging.INFO, logger=LOGGER)

    with pytest.raises(ValueError, match="bad row"), outages.guard():
        raise ValueError("bad row")
    with pytest.raises(sa_exc.IntegrityError), outages.guard():
        raise sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key"))

    assert outages.failed(KeyError("x")) is False
    assert not outages.down
    assert caplog.records == []


def test_a_success_heals_only_the_dependencies_the_step_used(
        caplog: pytest.LogCaptureFixture) -> None:
    outages = OutageLog("publisher", logging.getLogger(LOGGER), backoff_s=0.0)
    caplog.set_level(logging.INFO, logger=LOGGER)
    # Given both the database and Redis down
    outages.failed(database_down())
    outages.failed(redis_down())

    # When a step that only uses Redis goes through
    with outages.guard(uses=("redis",)):
        pass

    # Then Redis is back and the database outage goes on (no second "unreachable" line either)
    assert [m.split(" after")[0] for m in lines(caplog, "reachable again")] == [
        "publisher: redis reachable again"]
    assert outages.down
    outages.failed(database_down())
    assert len(lines(caplog, "database unreachable")) == 1

    # A step that uses nothing heals nothing; one that uses the database ends that outage
    assert outages.succeeded(()) == []
    assert outages.succeeded(("database",)) == ["database"]
    assert not outages.down
    assert len(lines(caplog, "database reachable again after")) == 1


def test_other_errors_are_logged_once_a_minute_with_the_count_muted_in_between(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    now_s = [1000.0]
    monkeypatch.setattr("scheduler.outages.time.monotonic", lambda: now_s[0])
    errors = RepeatedErrors("snapshot publisher", logging.getLogger(LOGGER), every_s=60.0)
    caplog.set_level(logging.INFO, logger=LOGGER)

    logged = [errors.error(ValueError("bad curve")) for _ in range(5)]
    assert errors.error(KeyError("models")) is True  # another error is not muted by the first
    now_s[0] += 61.0
    assert errors.error(ValueError("bad curve")) is True

    assert logged == [True, False, False, False, False]
    assert [r.getMessage() for r in caplog.records] == [
        "snapshot publisher failed: ValueError: bad curve",
        "snapshot publisher failed: KeyError: 'models'",
        "snapshot publisher failed: ValueError: bad curve (4 more times since it was last logged)"]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


# --- the loops ---------------------------------------------------------------------------------


class NoConnections(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"a connection was attempted to {request.url}")


def test_the_webhook_loop_rides_out_a_database_outage_and_resumes_by_itself(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a database that is not there yet (its directory is missing: every query fails)
    url = f"sqlite:///{tmp_path / 'later' / 'imgq.db'}"
    sessions = make_sessionmaker(create_engine(url))
    sender = WebhookSender(sessions, httpx.Client(transport=NoConnections()), WebhookPolicy(),
                           [1.0])
    sweep = rollup.periodic_sweep(sessions, "http://127.0.0.1:8000", every_s=0.0)
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="scheduler")
    thread = threading.Thread(target=sender.run, args=(stop, 0.01, sweep), daemon=True)
    thread.start()
    try:
        wait_until(lambda: lines(caplog, "webhook delivery: database unreachable"),
                   "the outage is logged")

        # When the database comes up and a delivery is due
        migrate(url)
        with sessions.begin() as session:
            tenant, _ = create_tenant(session, "outage")
            delivery = outbox.enqueue(session, tenant_id=tenant.id, event_type="job.succeeded",
                                        subject_id="job-1", url="http://10.0.0.5/hook", data={})
        delivery_id = delivery.id

        # Then the loop attempts it without being restarted (refused: a private address)
        def attempted() -> bool:
            with sessions() as session:
                return session.get_one(WebhookDelivery, delivery_id).attempts_count == 1

        wait_until(attempted, "the delivery is attempted")
        wait_until(lambda: lines(caplog, "webhook delivery: database reachable again"),
                   "the recovery is logged")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(lines(caplog, "webhook delivery: database unreachable")) == 1
    assert len(lines(caplog, "webhook delivery: database reachable again")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_open_batch_sweep_never_raises_and_logs_an_outage_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'later' / 'imgq.db'}"
    sweep = rollup.periodic_sweep(make_sessionmaker(create_engine(url)), "http://x", every_s=0.0)
    caplog.set_level(logging.INFO, logger="scheduler.batches.rollup")

    for _ in range(10):
        sweep()  # the database is not there: no exception
    migrate(url)
    sweep()
    sweep()

    assert [m.split(" (")[0].split(" after")[0] for m in lines(caplog, "open-batch sweep")] == [
        "open-batch sweep: database unreachable", "open-batch sweep: database reachable again"]
