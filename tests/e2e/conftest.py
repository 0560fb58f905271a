from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from cli.lab.stack import RunningStack, start_stack
from storage.db import drop_schema, migrate


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
        drop_schema(database_url)
    migrate(database_url)
    redis.Redis.from_url(redis_url).flushdb()
    running = start_stack(root, database_url=database_url, redis_url=redis_url,
                          simulator_url=simulator_url, image_dir=root / "images", **options)
    yield running
    running.stop_all()
    if request.param == "postgresql":
        drop_schema(database_url)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    """API + one real Celery worker + the dispatcher, on SQLite and then on PostgreSQL."""
    yield from stack_on_each_database(request, tmp_path_factory, redis_url, simulator_url, "stack")
