"""The Celery broker the settings name: one rule for the workers' app and the dispatcher's sender.

Redis (``IMGQ_REDIS_URL``, the default) or RabbitMQ (``IMGQ_BROKER_URL=amqp://...``). Either way
the broker only carries messages: the database and the leases in Redis decide who runs a job, so a
message delivered twice, late or never is harmless (docs/architecture.md). The waiting index,
leases and breaker stay in Redis whatever the broker.
"""

from __future__ import annotations

from typing import Any, Literal

from kombu.entity import Exchange, Queue

from imagequeue import keys
from imagequeue.settings import Settings, broker_transport

# How often a worker and RabbitMQ exchange AMQP heartbeats: a peer silent for two of them (a
# vanished host, a half-open socket) is dropped, so its unacknowledged messages come back within
# a minute and the worker reconnects, instead of after Celery's default 2 x 120 s.
AMQP_HEARTBEAT_S = 30


def broker_url(settings: Settings) -> str:
    return settings.broker_url or settings.redis_url


def broker_kind(settings: Settings) -> Literal["redis", "amqp"]:
    return broker_transport(broker_url(settings))


def broker_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings that name and tune the broker (``app.conf.update(**...)``)."""
    url = broker_url(settings)
    if broker_transport(url) == "redis":
        # Never what recovers a job (leases do); a redelivered message is recognised and ignored.
        return {"broker_url": url, "broker_transport_options": {
            "visibility_timeout": settings.broker_visibility_timeout_s}}
    return {
        "broker_url": url,
        "broker_heartbeat": AMQP_HEARTBEAT_S,
        # A publish returns once RabbitMQ has taken the message: one it refused raises in the
        # dispatcher at once, instead of being found lost after IMGQ_DISPATCH_STALE_S.
        "broker_transport_options": {"confirm_publish": True},
        # A durable classic queue of persistent messages, not a quorum queue: the message is not
        # the record of a job (the database is, and a message lost with a broker node is sent
        # again after IMGQ_DISPATCH_STALE_S), so replicating it through Raft buys little, and
        # quorum queues would move Celery to per-consumer prefetch and native delayed delivery.
        # The type is explicit so that a vhost whose default is quorum does not change it.
        "task_queues": [Queue(keys.GENERATE_QUEUE, Exchange(keys.GENERATE_QUEUE, "direct"),
                              routing_key=keys.GENERATE_QUEUE, durable=True,
                              queue_arguments={"x-queue-type": "classic"})],
        # RabbitMQ closes a channel whose delivery stays unacknowledged past its consumer_timeout
        # (30 min by default; late acks hold a message for the whole task). One task holds its
        # message for at most its route's timeouts plus IMGQ_DATABASE_RETRY_S (about 21 min with
        # the shipped catalogue); beyond that, this keeps the task running on its lease when the
        # channel goes: its message returns to a worker that finds the live holder and ignores it,
        # and the lost ack only logs an error. Raise consumer_timeout for longer routes.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
    }
