"""What the lab reads of the Celery broker, Redis or RabbitMQ: how many task messages are not yet
handled, emptying the task queue between runs, and a RabbitMQ vhost of a test session's own.

With late acks a message is unacknowledged from the moment a worker takes it until its task
returns. Redis shows both halves itself (the queue's list and kombu's ``unacked`` hash). RabbitMQ
tells an AMQP client only the messages ready in a queue, not those delivered and unacknowledged,
so for those the workers are asked (Celery's remote control: reserved, then active requests).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from celery import Celery
from kombu.connection import Connection

from imagequeue import keys
from imagequeue.settings import broker_transport

KOMBU_UNACKED = "unacked"  # the Redis transport's hash of delivered, unacknowledged messages
INSPECT_TIMEOUT_S = 2.0


class Backlog:
    """Counts the task messages of ``keys.GENERATE_QUEUE`` waiting in the broker or held by one
    of ``workers`` (Celery node names) with its task not returned; ``close()`` when done."""

    def __init__(self, url: str, workers: Sequence[str]) -> None:
        self.url = url
        self.workers = list(workers)
        self.redis: redis.Redis | None = None
        self.app: Celery | None = None
        if broker_transport(url) == "redis":
            self.redis = redis.Redis.from_url(url)
        else:
            self.app = Celery("imgq-lab", broker=url)

    def count(self) -> int | None:
        """Messages not yet handled; None when a worker did not answer (it may hold some)."""
        if self.redis is not None:
            return int(self.redis.llen(keys.GENERATE_QUEUE)) + int(self.redis.hlen(KOMBU_UNACKED))
        assert self.app is not None
        # Read in the order a message moves (ready, reserved, active), so that none slips by
        # between two reads; one on its way from the broker to a worker is in none of them.
        ready = ready_messages(self.url)
        if not self.workers:
            return ready
        inspect = self.app.control.inspect(destination=self.workers, timeout=INSPECT_TIMEOUT_S,
                                           limit=len(self.workers))
        reserved = inspect.reserved() or {}
        active = inspect.active() or {}
        if set(reserved) != set(self.workers) or set(active) != set(self.workers):
            return None
        return ready + sum(map(len, reserved.values())) + sum(map(len, active.values()))

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()
        if self.app is not None:
            self.app.close()


def ready_messages(url: str, queue: str = keys.GENERATE_QUEUE) -> int:
    """Messages waiting in ``queue`` on the RabbitMQ at ``url`` (0 if the queue does not exist)."""
    with Connection(url) as conn, conn.channel() as channel:
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except conn.channel_errors:  # NOT_FOUND: no worker has declared it yet
            return 0


def purge_queue(url: str, queue: str = keys.GENERATE_QUEUE) -> None:
    """Drop the task messages waiting in ``queue``; a missing queue is already empty."""
    with Connection(url) as conn, conn.channel() as channel, \
            contextlib.suppress(*conn.channel_errors):  # NOT_FOUND
        channel.queue_purge(queue)


def amqp_error(url: str, timeout_s: float = 3.0) -> str | None:
    """Why the RabbitMQ at ``url`` cannot be used (nothing answers, login refused), or None."""
    try:
        with Connection(url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", said as is
        return f"{type(exc).__name__}: {exc}"
    return None


def rabbitmqctl(*args: str) -> bool:
    """Run ``rabbitmqctl`` on this host's node; False if it is missing or refused (not root)."""
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass(frozen=True)
class PrivateVhost:
    """A vhost made for one test session on the RabbitMQ of this host, with the URL's user
    allowed everything in it; ``delete()`` drops it with every queue in it."""

    name: str
    url: str

    @classmethod
    def create(cls, url: str, name: str) -> PrivateVhost | None:
        """None when ``rabbitmqctl`` cannot make it on the broker ``url`` names (not on this host,
        not installed, not allowed, another node than the URL's)."""
        info = Connection(url).info()
        if info["hostname"] not in ("127.0.0.1", "localhost", "::1") or not rabbitmqctl(
                "add_vhost", name):
            return None
        vhost = cls(name, Connection(url).clone(virtual_host=name).as_uri(include_password=True))
        if rabbitmqctl("set_permissions", "-p", name, info["userid"], ".*", ".*", ".*") \
                and amqp_error(vhost.url) is None:
            return vhost
        vhost.delete()
        return None

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)
