"""The OpenAI-compatible gateway, driven by the official ``openai`` SDK, unchanged, against the
real stack (API, a Celery worker and the scheduler, each its own process, on PostgreSQL and real
Redis, the vendor simulator behind every model): images come back as the SDK expects them,
failover and degradation show in the headers, each kind of failure is the SDK exception it
should be, signed links open without a key until altered, a client that goes away has its job
canceled, and ``models.list()`` shows every model and route with its health.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import openai
import pytest
import redis
from PIL import Image
from sqlalchemy import select

from api.image_links import ImageLinks
from breaker import RedisBreakerStore
from breaker.factory import policy_source
from cli.lab.stack import RunningStack, sim_profile
from cli.stack import wait_until
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from storage.db import make_engine, make_sessionmaker
from storage.models import Job
from tests.e2e.conftest import stack_on_each_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
MODEL_A = "gemini-3-pro-image-preview"  # first on the default route
FALLBACK = "gemini-2.5-flash-image"  # second
SECRET = "a signing secret only this test knows"
ENV = {
    "IMGQ_GATEWAY_URL_SECRET": SECRET, "IMGQ_GATEWAY_POLL_S": "0.1",
    # Two failures in a row open a breaker (for the default 300 s): a pinned model in an outage
    # is soon unavailable for longer than any call waits.
    "IMGQ_BREAKER_MINIMUM_CALLS": "2", "IMGQ_PARK_BACKOFF_S": "0.3",
}


@pytest.fixture(scope="module", params=["postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          redis_url: str, simulator_url: str) -> Iterator[RunningStack]:
    yield from stack_on_each_database(request, tmp_path_factory, redis_url, simulator_url,
                                      "gateway", extra_env=ENV)


@pytest.fixture(scope="module")
def api_key(stack: RunningStack) -> str:
    return stack.new_tenant("gateway-co")


def sdk(stack: RunningStack, api_key: str, **options: Any) -> openai.OpenAI:
    """The official client, pointed at the gateway; no retries, so each call is one request."""
    return openai.OpenAI(api_key=api_key, base_url=f"{stack.api_url}/v1",
                         **{"max_retries": 0, "timeout": 60.0, **options})


@pytest.fixture()
def client(stack: RunningStack, api_key: str, simulator: str) -> Iterator[openai.OpenAI]:
    """The SDK for the module's tenant; the simulator healthy, every breaker closed."""
    with sdk(stack, api_key) as made:
        yield made
    reset_breakers(stack)


@contextmanager
def breakers(stack: RunningStack) -> Iterator[RedisBreakerStore]:
    """The stack's shared breaker store, as an operator's command reaches it."""
    settings = Settings(_env_file=None, **{  # type: ignore[call-arg]
        k.removeprefix("IMGQ_").lower(): v for k, v in stack.env.items() if k.startswith("IMGQ_")})
    connection = redis.Redis.from_url(settings.redis_url)
    try:
        yield RedisBreakerStore(connection, policy_source(
            settings, load_catalogue(settings.catalogue_path).models))
    finally:
        connection.close()


def reset_breakers(stack: RunningStack) -> None:
    with breakers(stack) as store:
        for model in load_catalogue().models:
            store.reset(model)


def png(b64: str | None) -> Image.Image:
    assert b64 is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


def job_of(stack: RunningStack, api_key: str, job_id: str) -> dict[str, Any]:
    with stack.client(api_key) as http:
        return dict(http.get(f"/v1/jobs/{job_id}").json())


def jobs_with_prompt(stack: RunningStack, prompt: str) -> list[Job]:
    engine = make_engine(stack.env["IMGQ_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            return list(session.scalars(select(Job).where(Job.prompt == prompt)))
    finally:
        engine.dispose()


def slow_model(simulator: str, model: str, seconds: float) -> None:
    """``model`` answers after ``seconds``; every other model at once."""
    quick = {"latency": {"median_s": 0.05, "sigma": 0.1}}
    httpx.put(f"{simulator}/_sim/profile", json={"models": {
        "default": quick, model: {"latency": {"median_s": seconds, "sigma": 0.0}}}},
        timeout=5).raise_for_status()


def held_tenant(stack: RunningStack, name: str, simulator: str) -> tuple[str, str]:
    """A tenant allowed one running job, and the id of a slow job of its that is running: its
    next job waits in the queue, not started, until that one ends."""
    key = stack.new_tenant(name, "--max-running", "1")
    slow_model(simulator, "gpt-image-1.5", 8.0)
    with stack.client(key) as http:
        blocker = http.post("/v1/jobs", json={"prompt": "the blocker", "model": "gpt-image-1.5"})
        assert blocker.status_code == 202, blocker.text
        blocker_id = blocker.json()["id"]
        wait_until(lambda: http.get(f"/v1/jobs/{blocker_id}").json()["status"] == "running",
                   "the blocker runs", 30)
    return key, blocker_id


# --- images ---------------------------------------------------------------------------------

def test_the_sdk_gets_a_png_and_the_headers_name_who_made_it(
        client: openai.OpenAI, stack: RunningStack, api_key: str) -> None:
    images = client.images.generate(model=MODEL_A, prompt="a lighthouse at dawn",
                                    size="1024x1024")

    assert images.data is not None and len(images.data) == 1
    assert png(images.data[0].b64_json).size == (1024, 1024)
    assert images.created > 0 and images.output_format == "png"

    raw = client.images.with_raw_response.generate(
        model="seedream-4-5-251128", prompt="a harbour", size="auto", user="end-user-7")
    assert raw.headers["x-imagequeue-served-by"] == "seedream-4.5"  # its vendor's id for it
    assert raw.headers["x-imagequeue-degraded"] == "false"
    assert "x-imagequeue-notice" not in raw.headers
    parsed = raw.parse()
    assert parsed.data is not None and parsed.data[0].b64_json
    job = job_of(stack, api_key, raw.headers["x-imagequeue-job-id"])
    assert (job["status"], job["lane"], job["route"]) == ("succeeded", "interactive", "preferred")
    assert job["metadata"] == {"user": "end-user-7"}


def test_a_route_and_auto_walk_their_chains(client: openai.OpenAI) -> None:
    fast = client.images.with_raw_response.generate(model="fast", prompt="a kite", n=1)
    auto = client.images.with_raw_response.generate(model="auto", prompt="a kite")

    assert fast.headers["x-imagequeue-served-by"] == load_catalogue().route("fast").models[0]
    assert auto.headers["x-imagequeue-served-by"] == MODEL_A
    assert {fast.headers["x-imagequeue-degraded"], auto.headers["x-imagequeue-degraded"]} == {
        "false"}


def test_with_the_first_model_in_an_outage_a_fallback_serves_and_says_so(
        client: openai.OpenAI, simulator: str, stack: RunningStack, api_key: str) -> None:
    sim_profile(simulator, outage_on=MODEL_A)

    raw = client.images.with_raw_response.generate(model=MODEL_A, prompt="a storm at sea",
                                                   size="1024x1024")

    assert raw.headers["x-imagequeue-served-by"] == FALLBACK
    assert raw.headers["x-imagequeue-degraded"] == "true"
    catalogue = load_catalogue()
    assert raw.headers["x-imagequeue-notice"] == (
        f"Made with {catalogue.shown_name(FALLBACK)} because {catalogue.shown_name(MODEL_A)} is "
        f"overloaded right now.")
    images = raw.parse()
    assert images.data is not None and png(images.data[0].b64_json).size == (1024, 1024)
    attempts = job_of(stack, api_key, raw.headers["x-imagequeue-job-id"])["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        (MODEL_A, "overloaded"), (FALLBACK, "success")]


def test_a_pinned_model_unavailable_past_the_wait_is_a_503_with_retry_after(
        client: openai.OpenAI, simulator: str, stack: RunningStack, api_key: str) -> None:
    sim_profile(simulator, outage_on=MODEL_A)

    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model=MODEL_A, prompt="a pinned storm", extra_headers={
            "x-imagequeue-fallback": "none", "x-imagequeue-wait": "30"})

    error = caught.value
    assert error.status_code == 503 and error.code == "all_models_unavailable", error.body
    assert "unavailable for the next" in error.message and MODEL_A in error.message
    retry_after = int(error.response.headers["retry-after"])
    assert retry_after > 30  # its breaker opened: no call before then
    assert error.response.headers["x-should-retry"] == "false"
    job = job_of(stack, api_key, error.response.headers["x-imagequeue-job-id"])
    assert job["status"] == "canceled"
    assert {a["model"] for a in job["attempts"]} == {MODEL_A}  # never another model


def test_a_wait_that_runs_out_is_a_503_and_cancels_the_job_not_started(
        stack: RunningStack, simulator: str) -> None:
    key, _ = held_tenant(stack, "held-for-the-wait", simulator)
    with sdk(stack, key) as client, pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="auto", prompt="waits in vain",
                               extra_headers={"x-imagequeue-wait": "1"})

    error = caught.value
    assert error.status_code == 503 and error.code == "timeout", error.body
    assert "not ready within 1 s" in error.message
    assert int(error.response.headers["retry-after"]) >= 1
    job = job_of(stack, key, error.response.headers["x-imagequeue-job-id"])
    assert (job["status"], job["attempts"]) == ("canceled", [])


def test_a_client_that_disconnects_before_its_job_started_has_it_canceled(
        stack: RunningStack, simulator: str) -> None:
    key, blocker_id = held_tenant(stack, "held-for-the-disconnect", simulator)
    prompt = f"nobody waits for this {time.time()}"
    # The SDK gives up after a second and closes its connection; the job waits behind the
    # blocker meanwhile, and the gateway would wait for it for 120 s.
    with sdk(stack, key, timeout=1.0) as impatient, pytest.raises(openai.APITimeoutError):
        impatient.images.generate(model="auto", prompt=prompt)

    canceled = wait_until(lambda: [j for j in jobs_with_prompt(stack, prompt)
                                   if j.status == "canceled"], "the job is canceled", 15)
    assert len(canceled) == 1 and canceled[0].started_at is None
    assert job_of(stack, key, canceled[0].id)["attempts"] == []
    assert job_of(stack, key, blocker_id)["status"] in ("running", "succeeded")


# --- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("marker", "code"), [("content_policy", "content_policy_violation"),
                                              ("invalid_request", "invalid_request")])
def test_a_vendor_refusing_the_prompt_is_a_bad_request_error(
        client: openai.OpenAI, stack: RunningStack, api_key: str, marker: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model=MODEL_A, prompt=f"[sim:{marker}] a forbidden thing")

    assert caught.value.status_code == 400 and caught.value.code == code, caught.value.body
    assert caught.value.type == "invalid_request_error"
    job = job_of(stack, api_key, caught.value.response.headers["x-imagequeue-job-id"])
    assert job["status"] == "failed" and len(job["attempts"]) == 1  # no fallback is tried


def test_tenant_limits_are_rate_limit_errors_with_retry_after(stack: RunningStack) -> None:
    with sdk(stack, stack.new_tenant("one-a-minute", "--rpm", "1")) as client:
        client.models.list()
        with pytest.raises(openai.RateLimitError) as rpm:
            client.images.generate(model="auto", prompt="one too many")
    with sdk(stack, stack.new_tenant("no-budget", "--budget-usd", "0.01")) as client, \
            pytest.raises(openai.RateLimitError) as budget:
        client.images.generate(model=MODEL_A, prompt="too dear")

    assert rpm.value.code == "rate_limited" and "requests per minute" in rpm.value.message
    assert int(rpm.value.response.headers["retry-after"]) >= 1
    assert (budget.value.code, budget.value.type) == ("budget_exceeded", "insufficient_quota")
    assert int(budget.value.response.headers["retry-after"]) >= 1


def test_a_bad_key_is_an_authentication_error_and_an_unknown_model_not_found(
        client: openai.OpenAI, stack: RunningStack) -> None:
    with sdk(stack, "imgq_not-a-key") as stranger, pytest.raises(openai.AuthenticationError) as bad:
        stranger.images.generate(model="auto", prompt="let me in")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.images.generate(model="dall-e-9", prompt="a cat")

    assert bad.value.status_code == 401 and bad.value.code == "invalid_api_key"
    assert bad.value.body == {"message": "invalid API key", "type": "authentication_error",
                              "param": None, "code": "invalid_api_key"}
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"
    assert "The model 'dall-e-9' does not exist" in unknown.value.message


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"model": "auto"}, "prompt", "Missing required parameter: 'prompt'."),
    ({"prompt": "   "}, "prompt", "Invalid 'prompt': must not be empty."),
    ({"prompt": "a cat", "size": "huge"}, "size",
     "Invalid value for 'size': 'huge'. Use WIDTHxHEIGHT, such as 1024x1024, or 'auto'."),
    ({"prompt": "a cat", "size": "10x10"}, "size", "Each side must be between 64 and 4096 pixels"),
    ({"prompt": "a cat", "n": 0}, "n", "less than the minimum of 1"),
    ({"prompt": "a cat", "n": 9}, "n", "greater than the maximum of 4"),
    ({"prompt": "a cat", "n": "2"}, "n", "expected an integer, but got a string instead"),
    ({"prompt": "a cat", "quality": "ultra"}, "quality",
     "Supported values are: 'low', 'medium', 'high', 'auto'"),
    ({"prompt": "a cat", "response_format": "gif"}, "response_format", "'b64_json', 'url'"),
    ({"prompt": "a cat", "style": "vivid"}, "style", "not supported by this gateway"),
    ({"prompt": "a cat", "colour": "red"}, "colour", "Unknown parameter: 'colour'."),
    ({"prompt": "a cat", "size": "3000x3000", "model": "recraftv4"}, "size",
     "does not offer 3000x3000"),
])
def test_each_bad_request_is_a_400_in_openais_shape(
        stack: RunningStack, api_key: str, body: dict[str, Any], param: str, message: str) -> None:
    with stack.client(api_key) as http:
        answer = http.post("/v1/images/generations", json=body,
                           headers={"x-imagequeue-fallback": "none"})

    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert message in error["message"], error


def test_malformed_json_and_bad_headers_are_400s_and_the_job_routes_keep_their_shape(
        client: openai.OpenAI, stack: RunningStack, api_key: str) -> None:
    with stack.client(api_key) as http:
        garbled = http.post("/v1/images/generations", content=b'{"prompt": "a cat",',
                            headers={"Content-Type": "application/json"})
        fallback = http.post("/v1/images/generations", json={"prompt": "a cat"},
                             headers={"x-imagequeue-fallback": "sometimes"})
        wait = http.post("/v1/images/generations", json={"prompt": "a cat"},
                         headers={"x-imagequeue-wait": "-1"})
        own = http.post("/v1/jobs", json={"size": "1024x1024"})
    with pytest.raises(openai.BadRequestError) as sdk_size:
        client.images.generate(prompt="a cat", size="big")  # type: ignore[arg-type]

    assert garbled.status_code == 400
    assert garbled.json()["error"]["code"] == "invalid_json"
    assert "request body is not valid JSON" in garbled.json()["error"]["message"]
    assert (fallback.status_code, fallback.json()["error"]["param"]) == (
        400, "x-imagequeue-fallback")
    assert (wait.status_code, wait.json()["error"]["param"]) == (400, "x-imagequeue-wait")
    assert sdk_size.value.param == "size"
    assert own.status_code == 422 and own.json()["error"]["type"] == "invalid_request"


# --- signed links ---------------------------------------------------------------------------

def test_a_url_answer_is_a_signed_link_that_opens_without_a_key_until_altered(
        client: openai.OpenAI, stack: RunningStack, api_key: str) -> None:
    images = client.images.generate(model="auto", prompt="a signed lighthouse",
                                    response_format="url")
    assert images.data is not None and images.data[0].url is not None
    url = images.data[0].url

    opened = httpx.get(url, timeout=10)
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(opened.content)).format == "PNG"

    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    path = f"{parts.scheme}://{parts.netloc}{parts.path}"
    job_id, index = parts.path.split("/")[-2:]
    forged_sig = {**query, "signature": query["signature"][:-2] + "AA"}
    later = {**query, "expires": str(int(query["expires"]) + 3600)}
    other_image = f"{path[:-len(index)]}1?{parts.query}"
    expired = ImageLinks(SECRET.encode(), 60).url(stack.api_url, job_id, int(index),
                                                  now_s=time.time() - 3600)
    for link, code in [(f"{path}?{urlencode(forged_sig)}", "invalid_signature"),
                       (f"{path}?{urlencode(later)}", "invalid_signature"),
                       (other_image, "invalid_signature"), (expired, "link_expired")]:
        refused = httpx.get(link, timeout=10)
        assert refused.status_code == 403, (link, refused.text)
        assert refused.json()["error"]["code"] == code
    assert httpx.get(path, timeout=10).status_code == 401  # neither a key nor a signature
    with stack.client(api_key) as http:
        assert http.get(path).content == opened.content  # the tenant's key opens it too
    with stack.client(stack.new_tenant("someone-else")) as http:
        assert http.get(path).status_code == 404


# --- models ---------------------------------------------------------------------------------

def test_models_list_shows_every_model_and_route_with_price_and_health(
        client: openai.OpenAI, stack: RunningStack) -> None:
    catalogue = load_catalogue()
    with breakers(stack) as store:  # an operator takes the default route's first model out
        store.force_open(MODEL_A, "maintenance")

    listed = {m.id: m.model_dump() for m in client.models.list()}

    assert set(listed) == set(catalogue.models) | set(catalogue.routes)
    model_a = listed[MODEL_A]
    assert (model_a["object"], model_a["owned_by"], model_a["kind"]) == ("model", "google", "model")
    assert model_a["price_per_image_usd"] == catalogue.models[MODEL_A].price_per_image_usd
    assert set(model_a["capabilities"]) == set(catalogue.models[MODEL_A].capabilities)
    assert (model_a["breaker_state"], model_a["health"]) == ("forced_open", "red")
    assert (listed[FALLBACK]["breaker_state"], listed[FALLBACK]["health"]) == ("closed", "green")
    default = listed["default"]
    assert (default["kind"], default["owned_by"]) == ("route", "imagequeue")
    assert default["models"] == list(catalogue.route("default").models)
    assert (default["health"], default["serving_model"]) == ("yellow", FALLBACK)  # degraded
    assert listed["logo"]["health"] == "green"
    by_vendor_id = client.models.retrieve("seedream-4-5-251128")
    assert by_vendor_id.id == "seedream-4.5"
    assert client.models.retrieve("auto").id == "default"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-9")
