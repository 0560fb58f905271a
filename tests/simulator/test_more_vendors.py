"""BFL (asynchronous), Seedream, Recraft and the aggregator, as providers.md describes them."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest

from tests.simulator.test_vendors import BEARER, BFL_KEY, decode_image, last_call, post

# ---------------------------------------------------------------- BFL FLUX


def bfl_submit(sim: str, prompt: str, **extra: Any) -> httpx.Response:
    return post(f"{sim}/bfl/v1/flux-2-pro", {"prompt": prompt, **extra}, BFL_KEY)


def bfl_wait(polling_url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Polls like the official SDK until the task leaves Pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = httpx.get(polling_url, headers=BFL_KEY, timeout=5)
        answer.raise_for_status()
        body: dict[str, Any] = answer.json()
        if body["status"] != "Pending":
            return body
        time.sleep(0.02)
    raise AssertionError("task stayed Pending")


def test_bfl_submit_poll_download_yields_the_requested_image(simulator: str) -> None:
    # Long enough that the first poll surely comes before the image, even on a busy machine.
    slow = {"models": {"default": {"latency": {"median_s": 1.0, "sigma": 0.0}}}}
    httpx.put(f"{simulator}/_sim/profile", json=slow, timeout=5).raise_for_status()
    submitted = bfl_submit(simulator, "a mountain", width=1024, height=768, output_format="png")

    assert submitted.status_code == 200
    task = submitted.json()
    assert task["polling_url"].startswith(f"{simulator}/bfl/v1/get_result?id={task['id']}")
    assert task["cost"] > 0
    first_poll = httpx.get(task["polling_url"], headers=BFL_KEY, timeout=5).json()
    assert first_poll["status"] == "Pending"
    result = bfl_wait(task["polling_url"])
    assert result["status"] == "Ready"
    download = httpx.get(result["result"]["sample"], timeout=5)
    assert download.headers["content-type"] == "image/png"
    assert decode_image(download.content).size == (1024, 768)


def test_bfl_default_output_is_jpeg(simulator: str) -> None:
    result = bfl_wait(bfl_submit(simulator, "a lake").json()["polling_url"])
    download = httpx.get(result["result"]["sample"], timeout=5)

    assert decode_image(download.content).format == "JPEG"


def test_bfl_sample_url_is_signed_and_expires(simulator: str) -> None:
    profile = httpx.get(f"{simulator}/_sim/profile", timeout=5).json()
    httpx.put(f"{simulator}/_sim/profile", json={**profile, "delivery_ttl_s": 0.5},
              timeout=5).raise_for_status()
    sample = bfl_wait(bfl_submit(simulator, "a lake").json()["polling_url"])["result"]["sample"]

    tampered = httpx.get(sample.replace("sig=", "sig=00"), timeout=5)
    assert tampered.status_code == 403
    time.sleep(1.1)
    assert httpx.get(sample, timeout=5).status_code == 403


@pytest.mark.parametrize(("marker", "status"), [
    ("[sim:content_policy]", "Content Moderated"),
    ("[sim:prompt_blocked]", "Request Moderated"),
    ("[sim:server_error:task]", "Error"),
])
def test_bfl_task_level_failures_are_reported_by_the_poll(
    simulator: str, marker: str, status: str
) -> None:
    submitted = bfl_submit(simulator, f"a lake {marker}")

    assert submitted.status_code == 200
    assert bfl_wait(submitted.json()["polling_url"])["status"] == status


def test_bfl_unknown_task_is_task_not_found(simulator: str) -> None:
    answer = httpx.get(f"{simulator}/bfl/v1/get_result?id=nope", headers=BFL_KEY, timeout=5)

    assert answer.json()["status"] == "Task not found"


def test_bfl_poll_can_fail_once_with_a_retryable_500(simulator: str) -> None:
    polling_url = bfl_submit(simulator, "a lake [sim:server_error:poll]").json()["polling_url"]

    assert httpx.get(polling_url, headers=BFL_KEY, timeout=5).status_code == 500
    assert bfl_wait(polling_url)["status"] == "Ready"


@pytest.mark.parametrize(("kind", "status"), [
    ("overloaded", 503), ("server_error", 500), ("deadline", 502), ("quota", 429),
    ("auth", 401), ("billing", 402), ("invalid_request", 422),
])
def test_bfl_submit_errors_use_fastapi_detail(simulator: str, kind: str, status: int) -> None:
    response = bfl_submit(simulator, f"a lake [sim:{kind}]")

    assert response.status_code == status
    assert response.json()["detail"]
    if kind == "quota":
        assert int(response.headers["retry-after"]) > 0
    if kind == "invalid_request":
        assert {"loc", "msg", "type"} <= set(response.json()["detail"][0])


def test_bfl_task_counts_as_in_flight_until_ready(simulator: str) -> None:
    httpx.put(f"{simulator}/_sim/profile", json={"models": {"default": {
        "latency": {"median_s": 0.4, "sigma": 0}}}}, timeout=5).raise_for_status()
    polling_url = bfl_submit(simulator, "a lake").json()["polling_url"]

    in_flight = httpx.get(f"{simulator}/_sim/stats", timeout=5).json()["flux-2-pro"]["in_flight"]
    bfl_wait(polling_url)
    time.sleep(0.05)
    after = httpx.get(f"{simulator}/_sim/stats", timeout=5).json()["flux-2-pro"]["in_flight"]
    assert (in_flight, after) == (1, 0)
    assert last_call(simulator)["finished_at"] - last_call(simulator)["started_at"] >= 0.35


# ---------------------------------------------------------------- Seedream / ModelArk


def ark_generate(sim: str, prompt: str, **extra: Any) -> httpx.Response:
    body = {"model": "seedream-4-5-251128", "prompt": prompt, "size": "2K", **extra}
    return post(f"{sim}/ark/api/v3/images/generations", body, BEARER)


@pytest.mark.parametrize(("size", "pixels"), [("1K", (1024, 1024)), ("1280x720", (1280, 720))])
def test_seedream_url_answer_downloads_an_image_of_the_requested_size(
    simulator: str, size: str, pixels: tuple[int, int]
) -> None:
    response = ark_generate(simulator, "a temple", size=size, watermark=False)

    assert response.status_code == 200 and response.headers["x-request-id"]
    body = response.json()
    assert body["model"] == "seedream-4-5-251128"
    assert body["usage"]["generated_images"] == 1
    item = body["data"][0]
    assert item["size"] == f"{pixels[0]}x{pixels[1]}"
    assert item["url"].startswith(f"{simulator}/ark/files/")
    assert decode_image(httpx.get(item["url"], timeout=5).content).size == pixels


def test_seedream_partial_failure_marks_one_item(simulator: str) -> None:
    body = ark_generate(simulator, "a temple [sim:partial]", n=3).json()

    errors = [item["error"] for item in body["data"] if "error" in item]
    assert len(body["data"]) == 3 and len(errors) == 1
    assert errors[0]["code"] == "OutputImageSensitiveContentDetected"
    assert body["usage"]["generated_images"] == 2


@pytest.mark.parametrize(("kind", "status", "code"), [
    ("overloaded", 429, "ServerOverloaded"),
    ("quota", 429, "RateLimitExceeded.EndpointRPMExceeded"),
    ("server_error", 500, "InternalServiceError"),
    ("auth", 401, "AuthenticationError"),
    ("billing", 403, "AccountOverdueError"),
    ("invalid_request", 400, "InvalidParameter"),
    ("content_policy", 400, "OutputImageSensitiveContentDetected"),
    ("prompt_blocked", 400, "InputTextSensitiveContentDetected"),
])
def test_seedream_errors_carry_code_and_request_id(
    simulator: str, kind: str, status: int, code: str
) -> None:
    response = ark_generate(simulator, f"a temple [sim:{kind}]")

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"].endswith(f"Request id: {response.headers['x-request-id']}")


# ---------------------------------------------------------------- Recraft


def test_recraft_raster_and_vector_models(simulator: str) -> None:
    url = f"{simulator}/recraft/v1/images/generations"
    raster = post(url, {"model": "recraftv4", "prompt": "a logo", "size": "16:9"}, BEARER).json()
    vector = post(url, {"model": "recraftv4_vector", "prompt": "a logo"}, BEARER).json()

    assert raster["credits"] > 0 and raster["data"][0]["image_id"]
    png = httpx.get(raster["data"][0]["url"], timeout=5)
    assert decode_image(png.content).size == (1344, 768)
    assert vector["data"][0]["url"].endswith(".svg")
    svg = httpx.get(vector["data"][0]["url"], timeout=5)
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text and 'width="1024"' in svg.text


def test_recraft_b64_json(simulator: str) -> None:
    body = post(f"{simulator}/recraft/v1/images/generations",
                {"model": "recraftv4", "prompt": "a logo", "response_format": "b64_json"},
                BEARER).json()

    assert decode_image(base64.b64decode(body["data"][0]["b64_json"])).size == (1024, 1024)


# ---------------------------------------------------------------- aggregator


def aggregator_generate(sim: str, prompt: str) -> httpx.Response:
    body = {"model": "gemini-3-pro-image-preview", "prompt": prompt, "size": "1024x1024"}
    return post(f"{sim}/aggregator/v1/images/generations", body, BEARER)


@pytest.mark.parametrize(("kind", "status", "inner_status"), [
    ("overloaded", 503, "UNAVAILABLE"),
    ("quota", 429, "RESOURCE_EXHAUSTED"),
    ("deadline", 504, "DEADLINE_EXCEEDED"),
])
def test_aggregator_wraps_the_upstream_body_stringified_in_the_message(
    simulator: str, kind: str, status: int, inner_status: str
) -> None:
    response = aggregator_generate(simulator, f"a fox [sim:{kind}]")

    assert response.status_code == status
    message = response.json()["error"]["message"]
    inner_text, _, suffix = message.rpartition(" (request id: ")
    assert suffix.endswith(")")
    assert json.loads(inner_text)["error"]["status"] == inner_status


def test_aggregator_success_is_openai_shaped(simulator: str) -> None:
    body = aggregator_generate(simulator, "a fox").json()

    assert decode_image(base64.b64decode(body["data"][0]["b64_json"])).size == (1024, 1024)


def test_aggregator_own_errors_are_new_api_errors(simulator: str) -> None:
    response = aggregator_generate(simulator, "a fox [sim:overloaded:no_channel]")

    error = response.json()["error"]
    assert (response.status_code, error["type"], error["code"]) == (
        503, "new_api_error", "model_not_found")
