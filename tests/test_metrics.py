"""The metrics port of a worker or the scheduler (``imagequeue/metrics.py``) over real HTTP on
loopback, and the API's ``/metrics`` switch."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from imagequeue import metrics
from imagequeue.settings import Settings


@pytest.fixture()
def server() -> Iterator[str]:
    running = metrics.MetricsServer(metrics.registry_for(metrics.WORKER_METRICS), "127.0.0.1",
                                    0).start()
    yield f"http://127.0.0.1:{running.port}"
    running.stop()


def test_metrics_parse_and_carry_every_worker_family(server: str) -> None:
    metrics.ATTEMPTS.labels(model="m1", outcome="overloaded").inc()
    response = httpx.get(f"{server}/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"imgq_attempts", "imgq_vendor_cost_usd", "imgq_job_queue_wait_seconds",
            "imgq_job_run_seconds", "imgq_jobs_ended", "imgq_breaker_store_errors",
            "process_resident_memory_bytes"} <= set(found)
    assert any(s.labels == {"model": "m1", "outcome": "overloaded"} and s.value >= 1
               for s in found["imgq_attempts"].samples)
    assert "imgq_queue_depth" not in found  # the scheduler's, not a worker's
    openmetrics = httpx.get(f"{server}/metrics",
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_healthz_answers_and_anything_else_is_a_clear_error(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json() == {"status": "ok"}
    assert httpx.head(f"{server}/healthz").status_code == 200
    missing = httpx.get(f"{server}/")
    assert missing.status_code == 404
    assert missing.json() == {"error": {
        "type": "not_found", "details": [],
        "message": "no such path '/': this port serves GET /metrics and GET /healthz"}}
    deleted = httpx.delete(f"{server}/metrics")
    assert (deleted.status_code, deleted.headers["allow"]) == (405, "GET, HEAD")
    assert deleted.json()["error"]["message"] == (
        "DELETE is not allowed here: this port serves GET /metrics and GET /healthz")


def test_port_zero_is_off_and_a_busy_port_is_logged_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = metrics.registry_for(())
    assert metrics.serve_metrics(registry, "127.0.0.1", 0, "worker") is None
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.ERROR, "imagequeue.metrics"):
            assert metrics.serve_metrics(registry, "127.0.0.1", port, "worker") is None
    assert f"worker: cannot serve metrics on 127.0.0.1:{port}" in caplog.text
    assert "running without them" in caplog.text


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("IMGQ_SCHEDULER_METRICS_PORT", "70000", "Input should be less than or equal to 65535"),
    ("IMGQ_WORKER_METRICS_PORT", "-1", "Input should be greater than or equal to 0"),
    ("IMGQ_WORKER_METRICS_PORT", "nine", "Input should be a valid integer"),
])
def test_a_bad_metrics_port_stops_the_process_naming_the_variable(
        variable: str, value: str, says: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "scheduler"], env={variable: value},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{variable}={value!r}: {says}" in done.stderr


@pytest.mark.parametrize("enabled", [True, False])
def test_the_apis_metrics_can_be_switched_off(enabled: bool) -> None:
    client = TestClient(create_app(Settings(api_metrics=enabled)))  # no request touches a service
    client.get("/healthz")
    response = client.get("/metrics")
    if not enabled:
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"
        return
    found = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {s.labels["route"] for s in found["imgq_http_requests"].samples} >= {"/healthz"}
