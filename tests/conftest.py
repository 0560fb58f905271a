"""Shared fixtures: real services by URL, strict in CI.

A test that needs Redis or PostgreSQL skips locally when the service is absent but fails when the
``CI`` environment variable is set, so missing infrastructure never turns the suite green.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import free_port, redis_answers

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_REDIS_URL = os.environ.get("IMGQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_POSTGRES_URL = os.environ.get(
    "IMGQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _missing(what: str, how: str) -> None:
    message = f"{what} is not reachable: {how}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def wait_http(url: str, timeout_s: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s}s: {last}")


def spawn(args: list[str], env: dict[str, str] | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child process of this interpreter's environment, output to a log file."""
    env = {**os.environ, **(env or {})}
    if log is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test Redis: the one at IMGQ_TEST_REDIS_URL, or a private redis-server we start."""
    import shutil

    if redis_answers(TEST_REDIS_URL):
        yield TEST_REDIS_URL
        return
    server = shutil.which("redis-server")
    if server is None:
        _missing("Redis", f"nothing answers at {TEST_REDIS_URL} and redis-server is not installed "
                 "(apt-get install redis-server), or set IMGQ_TEST_REDIS_URL")
    port = free_port()
    log = tmp_path_factory.mktemp("redis") / "redis.log"
    proc = spawn([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                  "--appendonly", "no"], log=log)
    url = f"redis://127.0.0.1:{port}/15"
    deadline = time.monotonic() + 10
    while not redis_answers(url):
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"private redis-server did not start: {log.read_text()}")
        time.sleep(0.1)
    yield url
    stop(proc)


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
def postgres_url() -> str:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(TEST_POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
    except Exception:  # noqa: BLE001 - any failure means "not reachable"
        _missing("PostgreSQL", f"start one reachable as {TEST_POSTGRES_URL} "
                 "(apt-get install postgresql) or set IMGQ_TEST_POSTGRES_URL")
    return TEST_POSTGRES_URL


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
        stop(proc)
        raise RuntimeError(log.read_text()) from None
    yield url
    stop(proc)


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
    _drop_everything(url)
    migrate(url)
    yield url
    downgrade_all(url)


def _drop_everything(url: str) -> None:
    import sqlalchemy

    from storage.models import Base

    engine = sqlalchemy.create_engine(url)
    Base.metadata.drop_all(engine)  # every table the models know, in foreign-key order
    with engine.begin() as conn:
        conn.execute(sqlalchemy.text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(scope="session")
def throwaway_postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of this session's own (``tests.pgcluster.ThrowawayPostgres``),
    started, for tests that stop and restart the database; a test that stops it starts it again.
    Skips without initdb/pg_ctl (fails under ``CI=1``)."""
    import shutil
    import tempfile

    from tests.pgcluster import PostgresNotInstalled, ThrowawayPostgres

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
