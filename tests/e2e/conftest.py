from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from cli.lab.stack import RunningStack, start_stack
from storage.db import drop_schema, migrate


@contextmanager
def running_stack(root: Path, database_url: str, redis_url: str, simulator_url: str,
                  **options: Any) -> Iterator[RunningStack]:
    """The real stack (cli/lab/stack.py ``start_stack``) with its logs and images under ``root``,
    on ``database_url`` freshly migrated (a PostgreSQL schema dropped first and again after) and
    an empty Redis; every process stopped on leaving. ``options`` go to start_stack."""
    postgres = not database_url.startswith("sqlite")
    if postgres:
        drop_schema(database_url)
    migrate(database_url)
    redis.Redis.from_url(redis_url).flushdb()
    running = start_stack(root, database_url=database_url, redis_url=redis_url,
                          simulator_url=simulator_url, image_dir=root / "images", **options)
    try:
        yield running
    finally:
        running.stop_all()
        if postgres:
            drop_schema(database_url)


def stack_on_each_database(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory, redis_url: str,
                           simulator_url: str, name: str, **options: Any) -> Iterator[RunningStack]:
    """The real stack on the database ``request.param`` names (``sqlite`` or ``postgresql``),
    freshly migrated, with an empty Redis; torn down afterwards. ``options`` go to start_stack."""
    root = tmp_path_factory.mktemp(f"{name}-{request.param}")
    if request.param == "sqlite":
        database_url = f"sqlite:///{root / 'imgq.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    with running_stack(root, database_url, redis_url, simulator_url, **options) as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    """API + one real Celery worker + the dispatcher, on SQLite and then on PostgreSQL."""
    yield from stack_on_each_database(request, tmp_path_factory, redis_url, simulator_url, "stack")
