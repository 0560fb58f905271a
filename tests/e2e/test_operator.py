"""Operator controls end to end: the admin breaker endpoints over real HTTP, and what a real worker
does after each action (API, Celery worker and scheduler processes, real Redis, the simulator)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from breaker import BreakerStore, Outcome
from breaker.factory import make_breaker_store
from cli.lab.stack import RunningStack
from cli.stack import free_port, spawn, stop_process, wait_http
from imagequeue import keys
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from tests.e2e.conftest import running_stack

ADMIN_TOKEN = "admin-secret-for-tests"
GEMINI = "gemini-3-pro-image-preview"
FALLBACK = "gemini-2.5-flash-image"  # second on the default route
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
          simulator_url: str) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("operator")
    with running_stack(root, f"sqlite:///{root / 'imgq.db'}", redis_url, simulator_url,
                       extra_env={"IMGQ_ADMIN_TOKEN": ADMIN_TOKEN}) as running:
        yield running


@pytest.fixture()
def admin(stack: RunningStack, simulator: str) -> Iterator[httpx.Client]:
    """The admin API with the right token; every breaker reset before and after the test, and
    the vendors' per-minute budgets fresh (Gemini 3 Pro allows one call every 3 s)."""
    client = redis.Redis.from_url(stack.env["IMGQ_REDIS_URL"])
    client.delete(*(keys.rate_window(model) for model in load_catalogue().models))
    client.close()
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        for model in load_catalogue().models:
            client.post(f"/v1/admin/breakers/{model}/reset").raise_for_status()
        yield client
        for model in load_catalogue().models:
            client.post(f"/v1/admin/breakers/{model}/reset")


@pytest.fixture(scope="module")
def tenant_key(stack: RunningStack) -> str:
    return stack.new_tenant("operator-tests")


@pytest.fixture()
def store(stack: RunningStack) -> BreakerStore:
    """The shared breaker as another worker sees it."""
    settings = Settings(redis_url=stack.env["IMGQ_REDIS_URL"])
    return make_breaker_store(settings, load_catalogue().models)


@pytest.fixture(scope="module")
def api_without_token(tmp_path_factory: pytest.TempPathFactory, stack: RunningStack) -> Iterator[str]:
    """A second API process of the same deployment, started without IMGQ_ADMIN_TOKEN."""
    port = free_port()
    env = {k: v for k, v in stack.env.items() if k != "IMGQ_ADMIN_TOKEN"}
    proc = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                  "--port", str(port), "--log-level", "warning"],
                 env={**env, "IMGQ_ADMIN_TOKEN": ""},
                 log=tmp_path_factory.mktemp("api-no-token") / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    yield url
    stop_process(proc)


def run_job(stack: RunningStack, api_key: str, prompt: str, timeout_s: float = 60) -> dict[str, Any]:
    with stack.client(api_key) as client:
        response = client.post("/v1/jobs", json={"prompt": prompt})
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish:\n{stack.logs()}")


def assert_error(response: httpx.Response, status: int, type_: str, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_
    for word in words:
        assert word in error["message"]


def test_admin_endpoints_are_closed_until_an_admin_token_is_configured(
        api_without_token: str, tenant_key: str) -> None:
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    {"Authorization": f"Bearer {tenant_key}"}):
        response = httpx.get(f"{api_without_token}/v1/admin/breakers", headers=headers)
        assert_error(response, 403, "forbidden", "IMGQ_ADMIN_TOKEN")
        response = httpx.post(f"{api_without_token}/v1/admin/breakers/{GEMINI}/open", headers=headers)
        assert_error(response, 403, "forbidden", "IMGQ_ADMIN_TOKEN")


def test_admin_endpoints_refuse_a_missing_or_wrong_token_and_a_tenant_key(
        stack: RunningStack, tenant_key: str, store: BreakerStore) -> None:
    url = f"{stack.api_url}/v1/admin/breakers"
    assert_error(httpx.get(url), 401, "unauthorized", "missing admin token")
    for token in ("not-the-token", tenant_key, ADMIN_TOKEN + "x"):
        headers = {"Authorization": f"Bearer {token}"}
        assert_error(httpx.get(url, headers=headers), 401, "unauthorized", "invalid admin token")
        response = httpx.post(f"{url}/{GEMINI}/open", headers=headers)
        assert_error(response, 401, "unauthorized", "invalid admin token")
    assert store.snapshot(GEMINI).state == "closed"  # no refused request changed anything


def test_admin_lists_every_model_with_state_colour_window_and_last_transitions(
        admin: httpx.Client, store: BreakerStore) -> None:
    for _ in range(5):
        store.record(GEMINI, Outcome.FAILURE, 0.2, probe=False)
    response = admin.get("/v1/admin/breakers")
    assert response.status_code == 200, response.text
    models = response.json()["models"]
    assert set(models) == set(load_catalogue().models)
    gemini = models[GEMINI]
    assert (gemini["state"], gemini["colour"]) == ("open", "red")
    assert gemini["window"]["calls"] == 5 and gemini["window"]["failures"] == 5
    assert gemini["last_transitions"][0]["to"] == "open"
    assert (models[FALLBACK]["state"], models[FALLBACK]["colour"]) == ("closed", "green")

    one = admin.get(f"/v1/admin/breakers/{GEMINI}").json()
    assert one["state"] == "open" and one["last_transitions"][0]["to"] == "open"


def test_each_admin_action_changes_what_get_shows(admin: httpx.Client) -> None:
    expected = {"open": ("forced_open", "red"), "disable": ("disabled", "green"),
                "close": ("closed", "green")}
    for action, (state, colour) in expected.items():
        body = {"reason": "vendor incident 7"} if action == "open" else None
        answer = admin.post(f"/v1/admin/breakers/{GEMINI}/{action}", json=body)
        assert answer.status_code == 200, answer.text
        shown = admin.get(f"/v1/admin/breakers/{GEMINI}").json()
        assert (answer.json()["state"], shown["state"], shown["colour"]) == (state, state, colour)
        if action == "open":
            assert shown["override_reason"] == "vendor incident 7"
    history = admin.get(f"/v1/admin/breakers/{GEMINI}", params={"transitions": 3}).json()
    assert [t["to"] for t in history["last_transitions"]] == ["closed", "disabled", "forced_open"]


def test_admin_names_the_known_models_for_an_unknown_one_and_rejects_unknown_actions(
        admin: httpx.Client) -> None:
    response = admin.post("/v1/admin/breakers/gemini-9-ultra/open")
    assert_error(response, 404, "not_found", "gemini-9-ultra", GEMINI, FALLBACK)
    assert_error(admin.get("/v1/admin/breakers/gemini-9-ultra"), 404, "not_found", GEMINI)
    response = admin.post(f"/v1/admin/breakers/{GEMINI}/explode")
    assert_error(response, 422, "invalid_request", "action")


def test_a_forced_open_model_is_skipped_and_the_attempt_log_says_why(
        stack: RunningStack, admin: httpx.Client, tenant_key: str) -> None:
    admin.post(f"/v1/admin/breakers/{GEMINI}/open", json={"reason": "drill"}).raise_for_status()
    job = run_job(stack, tenant_key, "a lighthouse while gemini is forced open")
    assert job["status"] == "succeeded", job
    assert (job["served_by"], job["degraded"]) == (FALLBACK, True)
    skipped = job["attempts"][0]
    assert (skipped["model"], skipped["outcome"]) == (GEMINI, "skipped")
    assert "forced open" in skipped["message"]

    admin.post(f"/v1/admin/breakers/{GEMINI}/close").raise_for_status()
    job = run_job(stack, tenant_key, "a lighthouse after the breaker is closed")
    assert (job["served_by"], job["degraded"]) == (GEMINI, False)


def test_disabling_an_open_breaker_lets_workers_call_the_model_again(
        stack: RunningStack, admin: httpx.Client, tenant_key: str, store: BreakerStore) -> None:
    for _ in range(5):
        store.record(GEMINI, Outcome.FAILURE, 0.2, probe=False)
    job = run_job(stack, tenant_key, "a fox while gemini's breaker is open")
    assert job["served_by"] == FALLBACK
    assert job["attempts"][0]["outcome"] == "skipped"
    assert "breaker open" in job["attempts"][0]["message"]

    admin.post(f"/v1/admin/breakers/{GEMINI}/disable").raise_for_status()
    job = run_job(stack, tenant_key, "a fox after the breaker is disabled")
    assert (job["served_by"], job["degraded"]) == (GEMINI, False)


def test_status_shows_breaker_state_and_colour_and_etas_treat_red_models_as_unavailable(
        stack: RunningStack, admin: httpx.Client) -> None:
    status = httpx.get(f"{stack.api_url}/v1/status").json()
    assert (status["models"][GEMINI]["breaker_state"], status["models"][GEMINI]["health"]) == (
        "closed", "green")

    admin.post(f"/v1/admin/breakers/{GEMINI}/open").raise_for_status()
    deadline = time.monotonic() + 10
    while True:
        models = httpx.get(f"{stack.api_url}/v1/status").json()["models"]
        if models[GEMINI]["failure_rate"] == 1.0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (models[GEMINI]["breaker_state"], models[GEMINI]["health"]) == ("forced_open", "red")
    assert models[GEMINI]["failure_rate"] == 1.0  # the ETA forecast skips it at once
    assert models[FALLBACK]["health"] == "green"
    assert models[FALLBACK]["failure_rate"] < 1.0

