"""A bare Celery task, the floor ``benchmarks.overhead`` prints beside imagequeue's figures.

Its workers run as imagequeue's do (threads pool, late acks, prefetch 1, no gossip, mingle or
heartbeat) on the same Redis, and the task does nothing but RPUSH its finish time to the key it
is given, so that a client can wait on it. The module stays small because each worker process
imports it: ``celery -A benchmarks.celery_floor worker -Q imgq-floor``, with the broker in
``IMGQ_FLOOR_BROKER_URL``.
"""

from __future__ import annotations

import functools
import os
import time

import redis
from celery import Celery

QUEUE = "imgq-floor"
TASK = "imgq-floor.noop"
BROKER_ENV = "IMGQ_FLOOR_BROKER_URL"

app = Celery("imgq-floor")
app.conf.update(
    broker_url=os.environ.get(BROKER_ENV, "memory://"),
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_ignore_result=True,
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)


@functools.cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(str(app.conf.broker_url))


@app.task(name=TASK)  # type: ignore[untyped-decorator]  # Celery's decorators are untyped
def noop(reply_key: str) -> None:
    _redis().rpush(reply_key, time.time())


def sender(broker_url: str) -> Celery:
    """A client that sends the task by name, as imagequeue's dispatcher sends its own."""
    client = Celery("imgq-floor-client", broker=broker_url)
    client.conf.broker_connection_retry_on_startup = True
    return client
