"""The fault suite: no job lost, none billed twice, when real processes are killed and real
services stop, with the default lease, heartbeat and reconcile settings.

Every case asserts: every job ends, none lost, no job with two successes, the calls on record
equal the calls in the simulator's ledger job by job, the heal time within its goal, and no
server error anywhere (HTTP 500 or a traceback in the API's log).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.lab import faults
from cli.lab.faultlab import FaultLab, FaultResult
from cli.lab.postgres import PostgresNotInstalled
from tests.conftest import _missing

WORKER_KILL_HEAL_S = 15.0
LEASE_S = 10.0  # IMGQ_LEASE_S's default, which the fault suite keeps
DEPENDENCY_HEAL_S = 5.0


@pytest.fixture(scope="module")
def lab() -> Iterator[FaultLab]:
    try:
        lab = FaultLab()
    except PostgresNotInstalled as exc:
        _missing("PostgreSQL's initdb/pg_ctl", str(exc))
        raise
    yield lab
    lab.close()


def assert_nothing_lost(result: FaultResult) -> None:
    print(result)  # shown with -s, and with the failure
    detail = f"{result}"
    assert result.lost == 0, detail
    assert result.succeeded == result.jobs, detail
    assert result.duplicated == 0, detail
    assert result.mismatched == [], detail
    assert result.recorded == result.billed, detail
    assert result.server_errors == 0, detail


@pytest.fixture(params=["redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str | None:
    """The Celery broker of the stack: None for Redis (IMGQ_REDIS_URL), else a RabbitMQ."""
    return None if request.param == "redis" else str(request.getfixturevalue("rabbitmq_url"))


def test_a_killed_workers_jobs_run_again_elsewhere_within_15s_billed_once_each_on_record(
        lab: FaultLab, broker_url: str | None) -> None:
    """On RabbitMQ the killed worker's unacknowledged messages come back as soon as its
    connection drops, while their leases still hold: each is ignored and runs only once, when
    its lease runs out. The Redis broker would give them back after its visibility timeout."""
    result = faults.kill_worker(lab, broker_url=broker_url)
    assert_nothing_lost(result)
    assert result.billed > result.jobs  # the killed calls were billed, and are on record
    assert result.heal_s is not None and result.heal_s <= WORKER_KILL_HEAL_S, result
    if broker_url is None:
        assert result.redelivered == 0, result
    else:
        assert result.redelivered == result.killed_jobs >= 3, result
        assert result.redelivered_s is not None and result.redelivered_s < LEASE_S, result


def test_a_worker_killed_while_polling_bfl_is_resumed_without_a_second_submit(
        lab: FaultLab) -> None:
    result = faults.kill_while_polling(lab)
    assert_nothing_lost(result)
    assert result.resubmits == 0, result
    assert result.billed == result.jobs, result
    assert result.heal_s is not None and result.heal_s <= WORKER_KILL_HEAL_S, result


def test_postgresql_down_loses_no_result_and_dispatch_resumes_within_5s(lab: FaultLab) -> None:
    result = faults.database_down(lab)
    assert_nothing_lost(result)
    assert "the scheduler exited" not in result.notes
    assert result.heal_s is not None and result.heal_s <= DEPENDENCY_HEAL_S, result


def test_a_worker_killed_while_postgresql_is_down_loses_no_paid_result_and_pays_nothing_again(
        lab: FaultLab) -> None:
    result = faults.killed_during_database_outage(lab)
    assert_nothing_lost(result)
    assert result.billed == result.jobs, result  # the killed worker's results were kept


def test_a_job_submitted_while_redis_is_down_is_accepted_and_runs_once_redis_is_back(
        lab: FaultLab) -> None:
    result = faults.redis_down_during_submit(lab)
    assert_nothing_lost(result)
    assert result.billed == 1
    assert "answered 503" in result.notes[-1], result
    assert result.heal_s is not None and result.heal_s <= DEPENDENCY_HEAL_S, result


def test_an_open_breaker_survives_a_redis_restart_no_call_goes_to_the_dead_model(
        lab: FaultLab) -> None:
    result = faults.redis_restart_open_breaker(lab)
    assert_nothing_lost(result)
    assert result.notes[-1].startswith("0 calls to the dead model"), result


def test_a_redis_flush_is_healed_at_once_without_false_task_failures(lab: FaultLab) -> None:
    result = faults.redis_flushed(lab)
    assert_nothing_lost(result)
    assert result.heal_s is not None and result.heal_s <= DEPENDENCY_HEAL_S, result
