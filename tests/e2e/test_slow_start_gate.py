"""The slow-start gate and hang detection with real processes: two Celery worker processes of
four threads sharing one breaker in Redis, the dispatcher, the API and the vendor simulator.

Model A (gemini-3-pro-image-preview, first on the default route) has a baseline of 1.5 s here,
so a call is slow past 3 s, and a timeout of 10 s; model B (gemini-2.5-flash-image) is next.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from breaker import BreakerState, RedisBreakerStore
from cli.lab.stack import RunningStack, fast_catalogue, sim_calls
from cli.stack import wait_until
from providers.catalogue import load_catalogue
from tests.e2e.conftest import running_stack
from tests.e2e.test_failover import breaker_store, submit, wait_all

MODEL_A, MODEL_B = "gemini-3-pro-image-preview", "gemini-2.5-flash-image"
MIN_CALLS = 3
GATE_WAIT_S = 1.0
SLOW_S = 3.0  # twice model A's baseline here
WORKERS, THREADS = 2, 4
ENV = {
    "IMGQ_BREAKER_MINIMUM_CALLS": str(MIN_CALLS), "IMGQ_BREAKER_GATE_WAIT_S": str(GATE_WAIT_S),
    "IMGQ_BREAKER_WINDOW_S": "30", "IMGQ_BREAKER_OPEN_DURATION_S": "120",
    "IMGQ_PARK_BACKOFF_S": "0.5",
}


def gate_catalogue(directory: Path) -> Path:
    """The fast catalogue with model A's baseline at 1.5 s (slow past 3 s), timeout 10 s."""
    path = fast_catalogue(directory)
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^baseline_latency_s = 20\.0$", "baseline_latency_s = 1.5", text, count=1)
    text = re.sub(r"(?m)^timeout_s = 120\.0$", "timeout_s = 10.0", text, count=1)
    path.write_text(text, encoding="utf-8")
    assert load_catalogue(path).models[MODEL_A].timeout_s == 10.0
    return path


def profile(simulator_url: str, model_a: dict[str, Any]) -> None:
    """Every model answers in about 0.15 s, model A as ``model_a`` says."""
    fast = {"latency": {"median_s": 0.15, "sigma": 0.1}}
    httpx.put(f"{simulator_url}/_sim/profile", json={"models": {
        "default": fast, MODEL_A: {**fast, **model_a}}}, timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str,
          simulator_url: str) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("gate")
    env = {**ENV, "IMGQ_CATALOGUE_PATH": str(gate_catalogue(root))}
    with running_stack(root, postgres_url, redis_url, simulator_url, extra_env=env,
                       workers=WORKERS, concurrency=THREADS) as running:
        yield running


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("gate")


@pytest.fixture()
def cold(stack: RunningStack, simulator: str) -> RedisBreakerStore:
    """Every breaker reset (a cold start: the gates at their minimum), the call log empty."""
    store = breaker_store(stack)
    for model in load_catalogue().models:
        store.reset(model)
    return store


def test_a_healthy_start_serves_every_job_on_the_first_model(
        stack: RunningStack, api_key: str, simulator: str, cold: RedisBreakerStore) -> None:
    profile(simulator, {})
    with stack.client(api_key) as client:
        jobs = wait_all(client, submit(client, 40, "a healthy start"))
    assert {(j["status"], j["served_by"], j["degraded"]) for j in jobs} == {
        ("succeeded", MODEL_A, False)}, stack.logs()
    assert len(sim_calls(simulator, MODEL_A)) == 40
    health = cold.snapshot(MODEL_A)
    print(f"after 40 jobs: gate {health.gate_limit or 'open'}, window {health.calls} calls")
    assert health.gate_limit is None or health.gate_limit > MIN_CALLS  # widened by the successes


def test_a_model_dead_from_the_start_gets_at_most_minimum_calls(
        stack: RunningStack, api_key: str, simulator: str, cold: RedisBreakerStore) -> None:
    profile(simulator, {"outages": [{"start_s": 0, "end_s": 3600, "kind": "overloaded",
                                     "rate": 1.0}]})
    with stack.client(api_key) as client:
        jobs = wait_all(client, submit(client, 40, "a dead model"))
    assert {(j["status"], j["served_by"]) for j in jobs} == {("succeeded", MODEL_B)}, stack.logs()
    calls = sim_calls(simulator, MODEL_A)
    print(f"40 jobs on {WORKERS} processes x {THREADS} threads: {len(calls)} calls to the dead "
          f"model (minimum_calls {MIN_CALLS})")
    assert 1 <= len(calls) <= MIN_CALLS
    assert cold.snapshot(MODEL_A).state is BreakerState.OPEN


def test_a_hanging_model_is_recognised_within_seconds_and_new_jobs_go_to_the_next(
        stack: RunningStack, api_key: str, simulator: str, cold: RedisBreakerStore) -> None:
    profile(simulator, {"outages": [{"start_s": 0, "end_s": 3600, "kind": "hang",
                                     "rate": 1.0}]})
    with stack.client(api_key) as client:
        submitted_at = time.monotonic()
        first = submit(client, MIN_CALLS, "the first calls hang")
        wait_until(lambda: len(sim_calls(simulator, MODEL_A)) == MIN_CALLS,
                   "the cold gate's calls reach model A", 10)
        wait_until(lambda: cold.snapshot(MODEL_A).hanging, "model A is seen hanging", 15,
                   poll_s=0.05)
        recognised_s = time.monotonic() - submitted_at
        health = cold.snapshot(MODEL_A)
        assert (health.colour.value, health.in_flight) == ("yellow", MIN_CALLS)
        assert health.slow_running >= 1  # the first to pass the threshold is enough
        status = client.get("/v1/status").json()["models"][MODEL_A]
        assert status["hanging"] is True and status["reason"].startswith("hanging: ")

        later_at = time.monotonic()
        later = wait_all(client, submit(client, 8, "after the hang was seen"), timeout_s=30)
        later_s = time.monotonic() - later_at
        hung = wait_all(client, first, timeout_s=40)
    print(f"hang recognised {recognised_s:.1f} s after submit (slow threshold {SLOW_S:g} s, "
          f"timeout 10 s); 8 later jobs done in {later_s:.1f} s")
    assert recognised_s < SLOW_S + 3.0
    assert {(j["status"], j["served_by"]) for j in later} == {("succeeded", MODEL_B)}
    assert all(j["attempts"][0]["outcome"] == "skipped" and "hanging" in j["attempts"][0]["message"]
               for j in later)
    assert later_s < 5.0  # none waited for model A's timeout
    assert len(sim_calls(simulator, MODEL_A)) == MIN_CALLS  # no new call went to it
    # The hung calls ran on to their timeout, then those jobs failed over too.
    assert {(j["status"], j["served_by"]) for j in hung} == {("succeeded", MODEL_B)}
    assert [j["attempts"][0]["outcome"] for j in hung] == ["timeout"] * MIN_CALLS
    assert cold.snapshot(MODEL_A).in_flight == 0


def test_a_gate_shut_longer_than_the_wait_sends_the_job_on_and_its_status_says_why(
        stack: RunningStack, api_key: str, simulator: str, cold: RedisBreakerStore) -> None:
    profile(simulator, {"latency": {"median_s": 2.0, "sigma": 0.01}})  # slow, not past 3 s
    waiting: set[str] = set()
    with stack.client(api_key) as client:
        ids = submit(client, 2 * MIN_CALLS, "a slow first model")

        def someone_waits() -> bool:
            for job_id in ids:
                why = client.get(f"/v1/jobs/{job_id}").json()["waiting_for"]
                if why is not None:
                    waiting.add(why)
            return bool(waiting)

        wait_until(someone_waits, "a job's status says it waits at the gate", 10, poll_s=0.02)
        jobs = wait_all(client, ids)
    assert waiting == {"waiting for first results from Gemini 3 Pro Image"}
    served = sorted(j["served_by"] for j in jobs)
    assert served == sorted([MODEL_A] * MIN_CALLS + [MODEL_B] * MIN_CALLS), stack.logs()
    moved = [j for j in jobs if j["served_by"] == MODEL_B]
    assert all(j["attempts"][0]["message"].startswith("slow-start gate shut") for j in moved)
    assert all(j["waiting_for"] is None for j in jobs)


def test_a_killed_workers_places_at_the_gate_are_freed_when_its_jobs_leases_run_out(
        stack: RunningStack, api_key: str, simulator: str, cold: RedisBreakerStore) -> None:
    """Every worker is killed (-9) while the cold gate's calls to model A are under way. Those
    places would count until model A's timeout plus the margin (40 s here); the scheduler frees
    them when the jobs' leases run out (IMGQ_LEASE_S, 10 s), so the jobs run again on model A
    instead of waiting at a gate held by calls nobody makes any more."""
    profile(simulator, {"latency": {"median_s": 2.5, "sigma": 0.01}})  # not past the 3 s threshold
    workers = [name for name in stack.procs if name.startswith("worker")]
    with stack.client(api_key) as client:
        ids = submit(client, MIN_CALLS, "killed mid-call")
        wait_until(lambda: len(sim_calls(simulator, MODEL_A)) == MIN_CALLS,
                   "the cold gate's calls reach model A", 10, poll_s=0.02)
        assert cold.snapshot(MODEL_A).in_flight == MIN_CALLS
        for name in workers:
            stack.procs[name].kill()
            stack.procs[name].wait()
        killed_at = time.monotonic()
        profile(simulator, {})
        for name in workers:
            stack.start_worker(name, THREADS)
        stack.wait_workers(len(workers))
        jobs = wait_all(client, ids, timeout_s=40)
        done_s = time.monotonic() - killed_at
    print(f"{MIN_CALLS} jobs killed mid-call ran again on model A {done_s:.1f} s after the kill "
          f"(lease 10 s; the killed calls' places would have counted for 40 s)")
    assert {(j["status"], j["served_by"]) for j in jobs} == {("succeeded", MODEL_A)}, stack.logs()
    assert not [a for j in jobs for a in j["attempts"] if "gate" in (a["message"] or "")]
    assert done_s < 25.0  # the lease, not model A's timeout plus the margin
    assert cold.snapshot(MODEL_A).in_flight == 0
