"""The real app served by uvicorn in this test process, on PostgreSQL and a redis-server of its
own (a pub/sub channel is shared by every database of a server), so that a test can count its
engine's statements and read its state; no scheduler runs, so nothing is published unless the
test publishes it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
import uvicorn

from api.app import create_app
from cli.stack import RedisServer, free_port
from imagequeue.settings import Settings
from storage.db import drop_schema, make_engine, make_sessionmaker, migrate
from storage.tenants import create_tenant
from tests.api.test_event_wakeups import needs_redis_server


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@dataclass
class InProcessApi:
    url: str
    api_keys: list[str]
    redis: redis.Redis
    app: Any


@contextmanager
def serve_in_process(root: Path, postgres_url: str, tenants: list[str],
                     **settings: Any) -> Iterator[InProcessApi]:
    """The app on a fresh schema with ``tenants`` created, once it serves and its snapshot
    listener has subscribed; ``settings`` go to its Settings."""
    needs_redis_server()
    server = RedisServer(root / "redis.log").start()
    drop_schema(postgres_url)
    migrate(postgres_url)
    engine = make_engine(postgres_url)
    with make_sessionmaker(engine).begin() as session:
        api_keys = [create_tenant(session, name)[1] for name in tenants]
    engine.dispose()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(Settings(database_url=postgres_url, redis_url=server.url,
                              image_dir=root / "images", public_base_url=url, **settings))
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    client = redis.Redis.from_url(server.url)
    try:
        wait_for(lambda: web.started, "the API serves")
        wait_for(lambda: app.state.snapshots.subscribed, "the API's listener subscribes")
        yield InProcessApi(url, api_keys, client, app)
    finally:
        web.should_exit = True
        thread.join(timeout=15)
        client.close()
        server.stop()
