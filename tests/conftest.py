"""Shared fixtures: real services by URL, strict in CI.

A test that needs Redis or PostgreSQL skips locally when the service is absent but fails when the
``CI`` environment variable is set, so missing infrastructure never turns the suite green.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import (
    RedisServer,
    RedisServerNotInstalled,
    free_port,
    redis_answers,
    spawn,
    stop_process,
    wait_http,
)
from storage.db import drop_schema

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_URL = os.environ.get("IMGQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_POSTGRES_URL = os.environ.get(
    "IMGQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_BROKER_URL = os.environ.get("IMGQ_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _missing(what: str, how: str) -> None:
    message = f"{what} is not reachable: {how}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _shared(what: str) -> None:
    """Before a test run uses a service that is not its own (``what``): fail when pytest-xdist
    runs this session in several processes, which would empty or drop each other's data there."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        pytest.fail(f"{what} would be shared by {workers} test processes, which empty each other's "
                    "data: run the suite in one process (`make test PYTEST_WORKERS=0`, or pytest "
                    "without -n)")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test Redis: IMGQ_TEST_REDIS_URL if set; else a private redis-server started for this
    run where redis-server is installed (two runs on one machine never flush each other's keys);
    else the one at 127.0.0.1:6379, database 15."""
    explicit = "IMGQ_TEST_REDIS_URL" in os.environ
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log")
    if not explicit:
        try:
            server.start()
        except RedisServerNotInstalled:
            pass
        else:
            yield server.url_for(15)
            server.stop()
            return
    if redis_answers(TEST_REDIS_URL):
        _shared(f"the Redis at {TEST_REDIS_URL}")
        yield TEST_REDIS_URL
        return
    _missing("Redis", f"nothing answers at {TEST_REDIS_URL} and redis-server is not installed "
             "(apt-get install redis-server), or set IMGQ_TEST_REDIS_URL")


@pytest.fixture()
def clean_redis(redis_url: str) -> Iterator[str]:
    """A Redis database emptied before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The test PostgreSQL: a database of this run's own (``imgq_test_<pid>``, dropped at the
    end) on the server of IMGQ_TEST_POSTGRES_URL, so that two runs on one machine never drop
    each other's tables; that URL's database itself where databases cannot be created."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(TEST_POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with engine.connect():
            pass
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        _missing("PostgreSQL", f"start one reachable as {TEST_POSTGRES_URL} "
                 "(apt-get install postgresql) or set IMGQ_TEST_POSTGRES_URL")
    own = f"imgq_test_{os.getpid()}"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {own} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {own}")
    except sqlalchemy.exc.SQLAlchemyError:
        engine.dispose()
        _shared(f"the PostgreSQL database of {TEST_POSTGRES_URL} (no database of this run's own "
                "could be created)")
        yield TEST_POSTGRES_URL
        return
    yield sqlalchemy.make_url(TEST_POSTGRES_URL).set(database=own).render_as_string(
        hide_password=False)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {own} WITH (FORCE)")
    engine.dispose()


@pytest.fixture(scope="session")
def rabbitmq_url() -> Iterator[str]:
    """The test RabbitMQ as a broker URL: IMGQ_TEST_BROKER_URL, else 127.0.0.1:5672 as guest.

    The session gets a vhost of its own (``imgq-test-<pid>``, deleted at the end, queues and
    all) when ``rabbitmqctl`` can make one on that broker (it runs on this host and we may manage
    it: root), so that no other session's messages reach our workers or theirs. Otherwise it
    uses the URL's vhost and purges the ``imgq`` queue before and after."""
    from kombu import Connection

    from cli.lab.broker import PrivateVhost, amqp_error, purge_queue

    error = amqp_error(TEST_BROKER_URL)
    if error is not None:
        _missing("RabbitMQ", f"{Connection(TEST_BROKER_URL).as_uri()} answers {error}: install "
                 "it (sudo apt-get install rabbitmq-server) or set IMGQ_TEST_BROKER_URL")
    vhost = PrivateVhost.create(TEST_BROKER_URL, f"imgq-test-{os.getpid()}")
    if vhost is None:
        _shared(f"the RabbitMQ vhost of {Connection(TEST_BROKER_URL).as_uri()}")
        purge_queue(TEST_BROKER_URL)
        yield TEST_BROKER_URL
        purge_queue(TEST_BROKER_URL)
        return
    try:
        yield vhost.url
    finally:
        vhost.delete()


@pytest.fixture(scope="session")
def simulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The vendor simulator, as a real HTTP server in its own process (profile ``healthy``)."""
    port = free_port()
    log = tmp_path_factory.mktemp("sim") / "simulator.log"
    proc = spawn(
        [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", str(port),
         "--profile", "healthy"],
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sim/health", proc=proc)
    except RuntimeError:
        stop_process(proc)
        raise RuntimeError(log.read_text()) from None
    yield url
    stop_process(proc)


@pytest.fixture()
def simulator(simulator_url: str) -> Iterator[str]:
    """The shared simulator, reset (call log emptied, profile ``healthy``) for this test."""
    httpx.post(f"{simulator_url}/_sim/reset", timeout=5).raise_for_status()
    yield simulator_url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database: a SQLite file, then PostgreSQL (the same tests run on both)."""
    from storage.db import downgrade_all, migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'imgq.db'}"
        migrate(url)
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    drop_schema(url)
    migrate(url)
    yield url
    downgrade_all(url)


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of this session's own (``cli.lab.postgres.ThrowawayPostgres``),
    started, for tests that stop and restart the database; a test that stops it starts it again.
    Skips without initdb/pg_ctl (fails under ``CI=1``)."""
    import shutil
    import tempfile

    from cli.lab.postgres import PostgresNotInstalled, ThrowawayPostgres

    root = Path(tempfile.mkdtemp(prefix="imgq-pg-"))  # under /tmp: the postgres user reaches it
    try:
        cluster = ThrowawayPostgres(root)
    except PostgresNotInstalled as exc:
        shutil.rmtree(root, ignore_errors=True)
        _missing("a throwaway PostgreSQL cluster", str(exc))
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 API server in its own process (moto's, ``cli.lab.s3.S3Server``); its
    ``aws_env()`` points boto3 at it. Skips without moto (fails under ``CI=1``)."""
    import importlib.util

    from cli.lab.s3 import S3Server

    if importlib.util.find_spec("moto") is None:
        _missing("an S3 API server", "moto is not installed (pip install -e '.[dev]')")
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    yield server
    server.stop()


@pytest.fixture()
def s3_bucket(s3_server: Any) -> str:
    """A new, empty bucket on the test S3 server, for this test alone."""
    import uuid

    return str(s3_server.create_bucket(f"imgq-{uuid.uuid4().hex[:12]}"))
