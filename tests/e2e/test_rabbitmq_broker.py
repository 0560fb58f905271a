"""The real stack with RabbitMQ as the Celery broker (IMGQ_BROKER_URL=amqp://...): a batch runs to
completion, the task queue is what imagequeue declares, and ``RunningStack.wait_idle`` sees the
tasks RabbitMQ has handed out. The waiting index, leases and breaker stay in Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import redis
from kombu.connection import Connection

from cli.lab.broker import ready_messages
from cli.lab.stack import RunningStack
from cli.stack import wait_until
from imagequeue import keys
from tests.e2e.conftest import stack_on_each_database
from tests.e2e.test_batches import prompts_jsonl, simulator_prompts, wait_batch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str, rabbitmq_url: str) -> Iterator[RunningStack]:
    """API, two 4-thread workers and the scheduler on PostgreSQL, RabbitMQ as their broker."""
    yield from stack_on_each_database(request, tmp_path_factory, redis_url, simulator_url,
                                      "rabbitmq", workers=2,
                                      extra_env={"IMGQ_BROKER_URL": rabbitmq_url})


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("rabbit-co")


def test_a_batch_runs_to_completion_through_rabbitmq_each_line_called_once(
        stack: RunningStack, api_key: str, simulator: str) -> None:
    with stack.client(api_key) as client:
        created = client.post("/v1/batches", content=prompts_jsonl(40, "amqp"))
        assert created.status_code in (200, 201, 202), created.text
        batch = wait_batch(client, created.json()["id"])
    assert batch["status"] == "completed", batch
    assert batch["request_counts"]["succeeded"] == 40, batch
    called = [p for p in simulator_prompts(simulator) if p.startswith("amqp ")]
    assert sorted(called) == sorted(f"amqp lighthouse {k}" for k in range(40))
    stack.wait_idle()
    assert ready_messages(stack.broker_url) == 0
    # The messages went through RabbitMQ: kombu's Redis transport never saw the task queue.
    client = redis.Redis.from_url(stack.env["IMGQ_REDIS_URL"])
    try:
        assert not client.exists(keys.GENERATE_QUEUE, f"_kombu.binding.{keys.GENERATE_QUEUE}")
    finally:
        client.close()


@pytest.mark.parametrize(("durable", "arguments", "refused"), [
    (False, {"x-queue-type": "classic"}, "durable"),
    (True, {"x-queue-type": "quorum"}, "x-queue-type"),
])
def test_the_task_queue_is_a_durable_classic_queue(
        stack: RunningStack, durable: bool, arguments: dict[str, str], refused: str) -> None:
    """RabbitMQ refuses to declare an existing queue with other properties (406), naming the
    one that differs: this one is durable, and classic."""
    with Connection(stack.broker_url) as conn, conn.channel() as channel, \
            pytest.raises(conn.channel_errors) as refusal:
        channel.queue_declare(keys.GENERATE_QUEUE, durable=durable, auto_delete=False,
                              arguments=arguments)
    assert "PRECONDITION_FAILED" in str(refusal.value) and refused in str(refusal.value)


def test_wait_idle_waits_for_a_task_rabbitmq_has_handed_to_a_worker(
        stack: RunningStack, api_key: str, simulator: str) -> None:
    """Redis knows nothing of a task in flight on RabbitMQ; wait_idle asks the workers."""
    httpx.put(f"{simulator}/_sim/profile", timeout=5, json={
        "models": {"default": {"latency": {"median_s": 2.0, "sigma": 0.01}}}}).raise_for_status()
    with stack.client(api_key) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "amqp slow"}).json()["id"]
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "running",
                   "a worker runs the job", 30)
        stack.wait_idle()
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
