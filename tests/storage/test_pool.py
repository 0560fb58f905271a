"""The connection pool of a server database: sized by the settings, no ping before each use, and
pooled connections that a PostgreSQL restart closed are replaced before anyone uses them."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from imagequeue.settings import Settings
from storage.db import make_engine


def test_the_pool_takes_its_sizes_and_recycle_age_from_the_settings(postgres_url: str) -> None:
    settings = Settings(database_url=postgres_url, database_pool_size=3,
                        database_max_overflow=1, database_pool_recycle_s=42)
    engine = make_engine(postgres_url, settings)
    try:
        assert engine.pool.size() == 3  # type: ignore[attr-defined]
        assert engine.pool._max_overflow == 1  # type: ignore[attr-defined]
        assert engine.pool._recycle == 42
        assert engine.pool._pre_ping is False
        defaults = make_engine(postgres_url)
        assert defaults.pool.size() == Settings().database_pool_size  # type: ignore[attr-defined]
        defaults.dispose()
    finally:
        engine.dispose()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["immediate", "fast"])
def test_connections_a_restart_closed_are_replaced_before_use_without_a_ping(
        throwaway_postgres: Any, mode: str) -> None:
    engine = make_engine(throwaway_postgres.url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_: statements.append(statement))
    try:
        connections = [engine.connect() for _ in range(3)]  # three in the pool
        pids = {c.execute(text("select pg_backend_pid()")).scalar() for c in connections}
        for connection in connections:
            connection.close()
        throwaway_postgres.restart(mode)

        with engine.connect() as connection:  # no error: the dead ones never reach a caller
            pid = connection.execute(text("select pg_backend_pid()")).scalar()
        assert pid not in pids
        assert statements == ["select pg_backend_pid()"] * 4  # and nothing else: no ping
    finally:
        engine.dispose()
        if not throwaway_postgres.running():
            throwaway_postgres.start()
