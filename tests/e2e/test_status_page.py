"""The /status page in a real browser, and the status document behind it, on the real stack.

Debian's Chromium (``/usr/bin/chromium``, driven by Playwright; no browser is downloaded) loads
``/status`` from a real API process with a worker and the scheduler (cli/lab/stack.py). The page
must draw every model's badge, turn one red without a reload when an operator forces it open,
say plainly when its live updates are lost and recover by itself when the API is back, and read
cleanly at desktop and phone widths. Screenshots land in ``var/test-artifacts/``
(``status-desktop.png``, ``status-phone.png``, ``status-lost.png``).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from breaker import BreakerStore, Outcome
from breaker.factory import make_breaker_store
from cli.lab.stack import RunningStack, wait_jobs
from cli.stack import free_port, spawn, stop_process, wait_http, wait_until
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import running_stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_INSTALL = "apt-get install -y chromium"
ARTIFACTS = REPO_ROOT / "var" / "test-artifacts"
ADMIN_TOKEN = "admin-secret-for-status-tests"
GEMINI = "gemini-3-pro-image-preview"
FALLBACK = "gemini-2.5-flash-image"  # second on the default route
LOST = "live updates lost — reconnecting…"
MODELS = list(load_catalogue().models)


def _needed(message: str) -> None:
    """Skip locally, fail under CI (tests/conftest.py ``_missing``): a missing browser must
    never turn the suite green."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _needed(f"Chromium is not installed at {CHROMIUM}: install it with `{CHROMIUM_INSTALL}` "
                "(`make test` does when it runs as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _needed("the playwright package is missing: .venv/bin/pip install -e '.[dev]'")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM),
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str,
          simulator_url: str) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("status-page")
    with running_stack(root, f"sqlite:///{root / 'imgq.db'}", redis_url, simulator_url,
                       extra_env={"IMGQ_ADMIN_TOKEN": ADMIN_TOKEN}) as running:
        yield running


@pytest.fixture()
def admin(stack: RunningStack, simulator: str) -> Iterator[httpx.Client]:
    """The admin API; every breaker reset before and after the test."""
    with httpx.Client(base_url=stack.api_url, timeout=30,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        for model in MODELS:
            client.post(f"/v1/admin/breakers/{model}/reset").raise_for_status()
        yield client
        for model in MODELS:
            client.post(f"/v1/admin/breakers/{model}/reset")


@pytest.fixture(scope="module")
def tenant_key(stack: RunningStack) -> str:
    return stack.new_tenant("status-page-tests")


@pytest.fixture()
def store(stack: RunningStack) -> BreakerStore:
    """The shared breaker, as a worker sees it."""
    return make_breaker_store(Settings(redis_url=stack.env["IMGQ_REDIS_URL"]), load_catalogue().models)


@pytest.fixture(scope="module")
def private_api(tmp_path_factory: pytest.TempPathFactory, stack: RunningStack) -> Iterator[str]:
    """A second API process of the same deployment with IMGQ_STATUS_PAGE_PUBLIC=false."""
    port = free_port()
    proc = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                  "--port", str(port), "--log-level", "warning"],
                 env={**stack.env, "IMGQ_STATUS_PAGE_PUBLIC": "false"},
                 log=tmp_path_factory.mktemp("private-status") / "api.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc=proc)
    yield url
    stop_process(proc)


def restart_api(stack: RunningStack) -> None:
    """Start the API again on the port it had (the page keeps its URL)."""
    port = str(urlparse(stack.api_url).port)
    stack.procs["api"] = spawn(
        [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1", "--port", port,
         "--log-level", "warning"], env=stack.env, log=stack.log_dir / "api.log")
    wait_http(f"{stack.api_url}/healthz", proc=stack.procs["api"])


def status(url: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/status", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def open_page(browser: Any, url: str, width: int, height: int = 900) -> Any:
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.goto(f"{url}/status")
    for model in MODELS:
        expect(page.locator(f'.model[data-model="{model}"] .badge')).to_be_visible(timeout=15_000)
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    return page


def assert_fits(page: Any, width: int) -> None:
    """Nothing sticks out sideways: no horizontal scrolling at this width."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_every_model_has_a_badge_and_a_forced_open_one_turns_red_without_a_reload(
        stack: RunningStack, admin: httpx.Client, tenant_key: str, playwright_browser: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(playwright_browser, stack.api_url, 1280)
    card = page.locator(f'.model[data-model="{GEMINI}"]')
    expect(card.locator(".badge")).to_have_attribute("data-colour", "green")
    expect(card.locator(".reason")).to_have_text("healthy")

    admin.post(f"/v1/admin/breakers/{GEMINI}/open", json={"reason": "vendor incident 7"}
               ).raise_for_status()
    expect(card.locator(".badge")).to_have_attribute("data-colour", "red", timeout=15_000)
    expect(card.locator(".badge")).to_have_text("not serving")
    expect(card.locator(".reason")).to_have_text("forced open by an operator: vendor incident 7")
    expect(card.locator(".transitions li").first).to_contain_text(
        "closed → forced open: by an operator: vendor incident 7")
    assert page.evaluate("window.loadedOnce") is True  # the same page: updated, not reloaded

    # A job now goes past the red model; the failover shows up on the page, with the reason.
    with stack.client(tenant_key) as client:
        job_id = client.post("/v1/jobs", json={"prompt": "a lighthouse at dawn"}).json()["id"]
        job = wait_jobs(client, [job_id])[job_id]
    assert (job["status"], job["served_by"]) == ("succeeded", FALLBACK), job
    hop = page.locator("#failovers li").first
    expect(hop).to_contain_text(f"{GEMINI} → {FALLBACK}", timeout=15_000)
    expect(hop).to_contain_text("skipped: breaker forced open by an operator")
    expect(page.locator(f'.model[data-model="{FALLBACK}"] .badge')).to_have_attribute(
        "data-colour", "green")
    worker = page.locator("#workers tr[data-worker]")
    expect(worker).to_have_count(1)
    expect(worker.locator('td[data-state="serving"]')).to_have_text("serving")
    expect(worker.locator("td").nth(2)).to_contain_text(" of 4")
    assert_fits(page, 1280)
    page.screenshot(path=str(ARTIFACTS / "status-desktop.png"), full_page=True)

    phone = open_page(playwright_browser, stack.api_url, 375, 812)
    expect(phone.locator(f'.model[data-model="{GEMINI}"] .badge')).to_have_attribute(
        "data-colour", "red")
    assert_fits(phone, 375)
    phone.screenshot(path=str(ARTIFACTS / "status-phone.png"), full_page=True)
    phone.context.close()
    page.context.close()


def test_the_page_says_when_live_updates_are_lost_and_clears_it_once_they_are_back(
        stack: RunningStack, admin: httpx.Client, playwright_browser: Any) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = open_page(playwright_browser, stack.api_url, 1280)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()

    stack.stop("api")
    try:
        expect(banner).to_be_visible(timeout=20_000)
        expect(banner).to_contain_text(LOST)
        expect(page.locator("#live")).to_have_attribute("data-state", "lost")
        page.screenshot(path=str(ARTIFACTS / "status-lost.png"))
    finally:
        restart_api(stack)
    expect(banner).to_be_hidden(timeout=30_000)  # reconnected by itself
    expect(page.locator("#live")).to_have_attribute("data-state", "live")

    admin.post(f"/v1/admin/breakers/{GEMINI}/open", json={"reason": "after the restart"}
               ).raise_for_status()
    card = page.locator(f'.model[data-model="{GEMINI}"]')
    expect(card.locator(".badge")).to_have_attribute("data-colour", "red", timeout=15_000)
    assert page.evaluate("window.loadedOnce") is True
    page.context.close()


def test_each_badge_says_why_in_words(stack: RunningStack, admin: httpx.Client,
                                      store: BreakerStore) -> None:
    for _ in range(5):
        store.record(GEMINI, Outcome.FAILURE, 0.2, probe=False)
    store.record(FALLBACK, Outcome.QUOTA, 0.1, probe=False, retry_after_s=120)
    store.record("gpt-image-1.5", Outcome.MISCONFIGURED, 0.1, probe=False,
                 reason="gpt-image-1.5: no API key (set OPENAI_API_KEY)")
    models = status(stack.api_url)["models"]

    gemini = models[GEMINI]
    assert (gemini["health"], gemini["breaker_state"]) == ("red", "open")
    assert gemini["reason"].startswith("open: 5 of 5 calls failed in the last 60 s; next probe at ")
    assert gemini["reason"].endswith(" UTC")
    assert gemini["window"] == {"calls": 5, "failures": 5, "slow": 0, "failure_rate": 1.0,
                                "seconds": 60}
    assert 0 < gemini["next_probe_in_seconds"] <= 300
    assert gemini["last_transitions"][0]["to"] == "open"

    assert models[FALLBACK]["health"] == "red"
    assert models[FALLBACK]["reason"].startswith("quota cooldown until ")
    assert models[FALLBACK]["cooldown_until_ms"] is not None
    assert models["gpt-image-1.5"]["reason"] == (
        "misconfigured: gpt-image-1.5: no API key (set OPENAI_API_KEY)")
    assert models["flux-2-pro"]["reason"] == "healthy"
    for model in models.values():
        assert model["baseline_latency_s"] > 0

    admin.post(f"/v1/admin/breakers/{GEMINI}/disable").raise_for_status()
    assert status(stack.api_url)["models"][GEMINI]["reason"].startswith(
        "breaker disabled by an operator")


def test_the_status_shows_the_queue_latency_and_throughput(
        stack: RunningStack, admin: httpx.Client, tenant_key: str) -> None:
    with stack.client(tenant_key) as client:
        ids = [client.post("/v1/jobs", json={"prompt": f"a fox, study {k}"}).json()["id"]
               for k in range(3)]
        wait_jobs(client, ids)
    body = wait_until(lambda: (lambda b: b if b["throughput"]["jobs_per_minute"] > 0 else None)(
        status(stack.api_url)), "the status counts the jobs served", 15)
    assert set(body["lanes"]) == {"interactive", "bulk"}
    for lane in body["lanes"].values():
        assert set(lane) == {"depth", "new_job_eta_start_seconds", "new_job_eta_finish_seconds"}
    assert {k: body["workers"][k] for k in ("alive", "slots", "draining")} == {
        "alive": 1, "slots": 4, "draining": 0}
    assert [w["concurrency"] for w in body["workers"]["nodes"]] == [4]
    assert body["throughput"]["over_seconds"] == 300
    served = body["models"][GEMINI]
    assert served["p50_calls"] >= 3 and served["p50_latency_s"] > 0
    assert served["p50_vs_baseline"] == pytest.approx(
        served["p50_latency_s"] / served["baseline_latency_s"], abs=0.01)


def test_the_stream_sends_the_status_and_counts_itself_open(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.api_url, timeout=30) as client, \
            client.stream("GET", "/v1/status/stream") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        event = next(line for line in lines if line.startswith("event:"))
        data = next(line for line in lines if line.startswith("data:"))
        assert event == "event: status"
        document = json.loads(data[5:])
        assert set(document["models"]) == set(MODELS)
        assert client.get("/v1/status").json()["open_event_streams"] >= 1


def test_a_private_status_wants_a_tenant_key_and_the_page_asks_for_one(
        private_api: str, tenant_key: str, playwright_browser: Any) -> None:
    from playwright.sync_api import expect

    for path in ("/v1/status", "/v1/status/stream"):
        missing = httpx.get(f"{private_api}{path}", timeout=30)
        assert missing.status_code == 401, missing.text
        assert missing.json()["error"]["type"] == "unauthorized"
        assert missing.json()["error"]["message"].startswith("missing API key: send "
                                                             "`Authorization: Bearer <key>`")
        wrong = httpx.get(f"{private_api}{path}", headers={"Authorization": "Bearer nope"},
                          timeout=30)
        assert wrong.status_code == 401
        assert wrong.json()["error"]["message"] == "invalid API key"
    assert set(status(private_api, headers={"Authorization": f"Bearer {tenant_key}"})["models"]
               ) == set(MODELS)
    assert httpx.get(f"{private_api}/status", timeout=30).status_code == 200  # the page holds no data

    page = playwright_browser.new_context(viewport={"width": 375, "height": 812}).new_page()
    page.goto(f"{private_api}/status")
    form = page.locator("#key-form")
    expect(form).to_be_visible(timeout=15_000)
    expect(page.locator("#content")).to_be_hidden()
    page.fill("#key", "imgq_not-a-real-key")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_have_text("invalid API key", timeout=15_000)
    page.fill("#key", tenant_key)
    page.click("#key-form button[type=submit]")
    expect(page.locator(f'.model[data-model="{GEMINI}"] .badge')).to_be_visible(timeout=15_000)
    expect(form).to_be_hidden()
    assert_fits(page, 375)
    page.context.close()

