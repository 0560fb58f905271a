"""IMGQ_BROKER_URL: Redis by default, RabbitMQ when it names one, anything else refused at start-up;
the workers' app and the dispatcher's sender read it through the one rule (imagequeue.broker)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from imagequeue.broker import broker_config
from imagequeue.settings import Settings
from scheduler.dispatcher import make_sender
from tests.conftest import REPO_ROOT
from workers.app import make_celery

RABBIT = "amqp://guest:guest@rabbit.internal:5672/imgq"


def test_unset_the_broker_is_the_redis_of_the_waiting_index_with_its_visibility_timeout() -> None:
    settings = Settings(redis_url="redis://cache:6379/3", broker_visibility_timeout_s=120)
    for app in (make_celery(settings), make_sender(settings)):
        assert app.conf.broker_url == "redis://cache:6379/3"
        assert app.conf.broker_transport_options == {"visibility_timeout": 120}


@pytest.mark.parametrize("url", [RABBIT, "pyamqp://u:p@rabbit/vh", "amqps://u:p@rabbit:5671/"])
def test_an_amqp_url_makes_rabbitmq_the_broker_of_workers_and_dispatcher_alike(url: str) -> None:
    settings = Settings(broker_url=url)
    config = broker_config(settings)
    assert "visibility_timeout" not in config["broker_transport_options"]  # Redis only
    assert config["broker_transport_options"]["confirm_publish"] is True
    [queue] = config["task_queues"]
    assert (queue.name, queue.durable, queue.queue_arguments) == (
        "imgq", True, {"x-queue-type": "classic"})
    for app in (make_celery(settings), make_sender(settings)):
        assert app.conf.broker_url == url
        assert app.conf.broker_heartbeat == config["broker_heartbeat"]
    assert settings.redis_url == "redis://127.0.0.1:6379/0"  # the index and leases stay in Redis


def test_an_empty_broker_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_BROKER_URL", "")
    assert Settings().broker_url is None


@pytest.mark.parametrize("url", ["kafka://broker:9092", "rabbit.internal:5672", "amqp:/rabbit",
                                 "http://rabbit:15672/", "sqs://"])
def test_a_broker_url_of_an_unknown_scheme_is_refused(url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGQ_BROKER_URL", url)
    with pytest.raises(ValidationError, match="broker_url") as refusal:
        Settings()
    assert "redis://, rediss://, amqp://, amqps://, pyamqp://" in str(refusal.value)


def test_a_worker_with_an_unknown_broker_scheme_does_not_start() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cli", "worker"], capture_output=True, text=True, timeout=60,
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200",
                            "IMGQ_BROKER_URL": "kafka://broker:9092"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "IMGQ_BROKER_URL='kafka://broker:9092'" in result.stderr
    assert "it starts with kafka://" in result.stderr
