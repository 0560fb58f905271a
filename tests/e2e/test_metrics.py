"""Prometheus metrics from every process of a real stack: the API on its own port, a worker and
the scheduler on ports of their own. Each ``/metrics`` parses as the Prometheus text format, and
the figures move as jobs run, by exactly what the jobs' own records say happened."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from breaker import BreakerState
from cli.lab.stack import RunningStack, sim_profile, wait_jobs
from cli.stack import wait_until
from tests.e2e.conftest import running_stack
from tests.e2e.test_batches import Receiver
from tests.e2e.test_failover import breaker_store

pytestmark = pytest.mark.slow

GEMINI = "gemini-3-pro-image-preview"
JOBS = 8
ENV = {"IMGQ_BREAKER_WINDOW_S": "30", "IMGQ_BREAKER_MINIMUM_CALLS": "4",
       "IMGQ_BREAKER_OPEN_DURATION_S": "120", "IMGQ_WEBHOOK_ALLOW_LOOPBACK": "true",
       "IMGQ_WEBHOOK_POLL_INTERVAL_S": "0.1"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str,
          simulator_url: str) -> Iterator[RunningStack]:
    """API, one worker and the scheduler on PostgreSQL, each serving its metrics."""
    with running_stack(tmp_path_factory.mktemp("metrics"), postgres_url, redis_url,
                       simulator_url, extra_env=ENV, metrics=True) as running:
        running.wait_metrics()
        yield running


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("metrics")


def families(url: str) -> dict[str, Any]:
    """The families of a ``/metrics`` page by name (a counter's without ``_total``)."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def samples(url: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in families(url).values() for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent: a counter nothing has moved yet)."""
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    return sum(v for (n, have), v in found.items()
               if n == name and set(labels.items()) <= set(have))


EXPECTED = {
    "api": {"imgq_http_requests", "imgq_http_request_duration_seconds", "imgq_jobs_submitted",
            "imgq_jobs_ended", "imgq_breaker_store_errors", "process_cpu_seconds"},
    "worker1": {"imgq_attempts", "imgq_jobs_served", "imgq_vendor_cost_usd", "imgq_job_queue_wait_seconds",
                "imgq_job_run_seconds", "imgq_jobs_ended", "imgq_breaker_store_errors"},
    "scheduler": {"imgq_jobs", "imgq_queue_depth", "imgq_queue_parked", "imgq_jobs_in_flight",
                  "imgq_new_job_eta_start_seconds", "imgq_new_job_eta_finish_seconds",
                  "imgq_workers_alive", "imgq_worker_slots", "imgq_snapshot_age_seconds",
                  "imgq_breaker_state", "imgq_breaker_failure_rate", "imgq_breaker_transitions",
                  "imgq_webhook_deliveries", "imgq_scrape_source_up",
                  "imgq_breaker_store_errors"},
}


def test_every_process_serves_metrics_that_parse_each_family_documented(
        stack: RunningStack) -> None:
    assert set(stack.metrics_urls) == set(EXPECTED)
    for name, url in stack.metrics_urls.items():
        found = families(url)
        assert EXPECTED[name] <= set(found), (name, EXPECTED[name] - set(found))
        undocumented = [f.name for f in found.values()
                        if f.name.startswith("imgq_") and not f.documentation]
        assert undocumented == [], name
    # The worker's and the scheduler's families stay on their own ports.
    assert "imgq_attempts" not in families(stack.api_url)
    assert "imgq_queue_depth" not in families(stack.metrics_urls["worker1"])


def test_a_metrics_port_answers_healthz_and_refuses_what_it_does_not_serve(
        stack: RunningStack) -> None:
    url = stack.metrics_urls["worker1"]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    missing = httpx.get(f"{url}/metrics/extra")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "type": "not_found", "details": [],
        "message": "no such path '/metrics/extra': this port serves GET /metrics and GET /healthz"}
    posted = httpx.post(f"{url}/metrics", content=b"x")
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    assert posted.json()["error"]["type"] == "method_not_allowed"


def test_the_counters_move_by_what_the_jobs_record(stack: RunningStack, api_key: str,
                                                    simulator: str) -> None:
    api, worker, scheduler = (stack.metrics_urls[n] for n in ("api", "worker1", "scheduler"))
    before = {"api": samples(api), "worker": samples(worker), "scheduler": samples(scheduler)}
    sim_profile(simulator, outage_on=GEMINI)  # its breaker opens after 4 failed calls
    receiver = Receiver()
    try:
        with stack.client(api_key) as client:
            ids = [client.post("/v1/jobs", json={"prompt": f"a harbour #{k}"}).json()["id"]
                   for k in range(JOBS - 1)]
            hooked = client.post("/v1/jobs", json={"prompt": "a harbour, hooked",
                                                   "webhook_url": receiver.url})
            assert hooked.status_code == 202, hooked.text
            jobs = list(wait_jobs(client, [*ids, hooked.json()["id"]], timeout_s=90).values())
            receiver.wait(1)
    finally:
        receiver.close()
    assert [j["status"] for j in jobs] == ["succeeded"] * JOBS, stack.logs()

    # The worker: every model tried, by outcome, exactly as the jobs' attempts list them.
    after = samples(worker)
    moved = Counter({(model, outcome): value(after, "imgq_attempts_total", model=model,
                                             outcome=outcome)
                     - value(before["worker"], "imgq_attempts_total", model=model,
                             outcome=outcome)
                     for model, outcome in {(a["model"], a["outcome"])
                                            for j in jobs for a in j["attempts"]}})
    assert moved == Counter((a["model"], a["outcome"]) for j in jobs for a in j["attempts"])
    assert moved[(GEMINI, "overloaded")] >= 4
    served = Counter((j["served_by"], "true" if j["degraded"] else "false") for j in jobs)
    assert {key: value(after, "imgq_jobs_served_total", model=key[0], fallback=key[1])
            - value(before["worker"], "imgq_jobs_served_total", model=key[0], fallback=key[1])
            for key in served} == served
    cost = (total(after, "imgq_vendor_cost_usd_total")
            - total(before["worker"], "imgq_vendor_cost_usd_total"))
    assert math.isclose(cost, sum(j["cost_usd"] for j in jobs), abs_tol=1e-9)
    for name, labels in [("imgq_jobs_ended_total", {"status": "succeeded", "lane": "interactive"}),
                         ("imgq_job_queue_wait_seconds_count", {"lane": "interactive"}),
                         ("imgq_job_run_seconds_count", {"lane": "interactive",
                                                         "status": "succeeded"})]:
        assert value(after, name, **labels) - value(before["worker"], name, **labels) == JOBS

    # The API: the jobs it accepted, and the requests that accepted them.
    api_after = samples(api)
    assert (value(api_after, "imgq_jobs_submitted_total", lane="interactive")
            - value(before["api"], "imgq_jobs_submitted_total", lane="interactive")) == JOBS
    accepted = {"method": "POST", "route": "/v1/jobs", "status": "202"}
    assert (value(api_after, "imgq_http_requests_total", **accepted)
            - value(before["api"], "imgq_http_requests_total", **accepted)) == JOBS

    # The scheduler: the breaker's state and every transition in its event stream, the
    # webhook delivered, the sources it read.
    store = breaker_store(stack)
    assert store.snapshot(GEMINI).state is BreakerState.OPEN
    opened = sum(1 for e in store.events(GEMINI, 1000)
                 if (e.from_state, e.to_state) == (BreakerState.CLOSED, BreakerState.OPEN))
    now = samples(scheduler)
    assert value(now, "imgq_breaker_state", model=GEMINI, state="open") == 1
    assert value(now, "imgq_breaker_state", model=GEMINI, state="closed") == 0
    assert value(now, "imgq_breaker_transitions_total", model=GEMINI, from_state="closed",
                 to_state="open") == opened >= 1
    wait_until(lambda: value(samples(scheduler), "imgq_webhook_deliveries_total",
                             outcome="delivered")
               - value(before["scheduler"], "imgq_webhook_deliveries_total",
                       outcome="delivered") == 1, "the scheduler counts the delivered webhook")
    assert {value(now, "imgq_scrape_source_up", source=s)
            for s in ("database", "redis", "breaker")} == {1.0}
    assert (value(now, "imgq_workers_alive"), value(now, "imgq_worker_slots")) == (1, 4)
    assert value(now, "imgq_new_job_eta_start_seconds", lane="interactive") >= 0
    assert ("imgq_new_job_eta_finish_seconds", (("lane", "bulk"),)) in now


def test_a_parked_job_shows_in_the_scheduler_gauges_and_its_cancel_in_the_apis_counter(
        stack: RunningStack, api_key: str) -> None:
    api, scheduler = stack.metrics_urls["api"], stack.metrics_urls["scheduler"]
    store = breaker_store(stack)
    store.force_open(GEMINI, "maintenance")
    canceled_before = value(samples(api), "imgq_jobs_ended_total", status="canceled",
                            lane="interactive")
    with stack.client(api_key) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "waits", "model": GEMINI}).json()["id"]

        def gauges(parked: float, queued: float) -> bool:
            found = samples(scheduler)
            return (value(found, "imgq_queue_parked"),
                    value(found, "imgq_jobs", status="queued", lane="interactive"),
                    value(found, "imgq_jobs", status="running", lane="interactive"),
                    value(found, "imgq_queue_depth", lane="interactive")) == (parked, queued, 0, 0)

        wait_until(lambda: gauges(1, 1), "the scheduler shows one parked, queued job")
        assert value(samples(scheduler), "imgq_breaker_state", model=GEMINI,
                     state="forced_open") == 1
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        wait_until(lambda: gauges(0, 0), "the scheduler shows the queue empty")
    store.reset(GEMINI)
    assert value(samples(api), "imgq_jobs_ended_total", status="canceled",
                 lane="interactive") - canceled_before == 1
