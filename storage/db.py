"""Engines, sessions and migrations. Built from a URL at the entry point; no module-level engine."""

from __future__ import annotations

import select
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from imagequeue.settings import Settings
from storage.models import Base

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """An engine for ``url``; ``settings`` size its pool (IMGQ_DATABASE_POOL_SIZE,
    IMGQ_DATABASE_MAX_OVERFLOW, IMGQ_DATABASE_POOL_RECYCLE_S; their defaults without)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, **pool_options(settings))
    event.listen(engine, "checkout", _discard_if_closed)
    return engine


def pool_options(settings: Settings | None) -> dict[str, Any]:
    """A server database's pool: no ping before each use (a round trip per transaction), a
    recycle age instead, and the closed-socket check of ``_discard_if_closed``."""
    def value(name: str) -> Any:
        return getattr(settings, name) if settings else Settings.model_fields[name].default

    return {"pool_size": value("database_pool_size"),
            "max_overflow": value("database_max_overflow"),
            "pool_recycle": value("database_pool_recycle_s"), "pool_pre_ping": False}


def _discard_if_closed(dbapi_conn: Any, _record: object, _proxy: object) -> None:
    """A connection idle in the pool has nothing to read: if its socket is readable, the server
    closed it (a restart: its goodbye, then end of file). One non-blocking poll finds that, and
    the pool connects afresh instead (DisconnectionError), with no round trip to the server."""
    try:
        fd = dbapi_conn.fileno()
    except Exception as exc:  # noqa: BLE001 - the driver closed it already
        raise DisconnectionError(str(exc)) from exc
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("the server closed this pooled connection")


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the schema at ``url`` to the newest revision (idempotent)."""
    if make_url(url).get_backend_name() == "sqlite":
        make_engine(url).dispose()  # creates the parent directory
    command.upgrade(alembic_config(url), "head")


def downgrade_all(url: str) -> None:
    command.downgrade(alembic_config(url), "base")


def drop_schema(url: str) -> None:
    """Drop every table the models know (in foreign-key order) and Alembic's version table: an
    empty database for ``migrate`` to build again, whatever revision it held."""
    engine = create_engine(url)
    try:
        Base.metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()
