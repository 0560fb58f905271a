"""The simulator speaks each vendor's wire format: real images of the requested size, and for
every forced outcome the status, body fields and headers that providers.md documents."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import httpx
import pytest
from PIL import Image

BEARER = {"authorization": "Bearer test-key"}
GEMINI_KEY = {"x-goog-api-key": "test-key"}
BFL_KEY = {"x-key": "test-key"}


def decode_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=10)


def last_call(sim: str) -> dict[str, Any]:
    calls = httpx.get(f"{sim}/_sim/calls", timeout=5).json()["calls"]
    assert calls, "the simulator logged no call"
    return dict(calls[-1])


# ---------------------------------------------------------------- OpenAI Images


def openai_generate(sim: str, prompt: str, **extra: Any) -> httpx.Response:
    body = {"model": "gpt-image-1.5", "prompt": prompt, "size": "1024x1536", **extra}
    return post(f"{sim}/openai/v1/images/generations", body, BEARER)


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
def test_openai_success_returns_n_images_of_the_requested_size_and_format(
    simulator: str, output_format: str
) -> None:
    response = openai_generate(simulator, "a lighthouse", n=2, output_format=output_format)

    assert response.status_code == 200
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["output_format"] == output_format and body["size"] == "1024x1536"
    assert body["usage"]["output_tokens"] > 0
    assert len(body["data"]) == 2
    image = decode_image(base64.b64decode(body["data"][0]["b64_json"]))
    assert image.size == (1024, 1536)
    assert image.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[output_format]


OPENAI_ERRORS = [
    # kind, status, error.type, error.code
    ("overloaded", 503, "service_unavailable_error", "server_is_overloaded"),
    ("server_error", 500, "server_error", "server_error"),
    ("deadline", 502, "cf_bad_gateway", 502),
    ("quota", 429, "requests", "rate_limit_exceeded"),
    ("auth", 401, "invalid_request_error", "invalid_api_key"),
    ("billing", 429, "insufficient_quota", "insufficient_quota"),
    ("invalid_request", 400, "invalid_request_error", "invalid_value"),
    ("content_policy", 400, "image_generation_user_error", "moderation_blocked"),
    ("prompt_blocked", 400, "image_generation_user_error", "moderation_blocked"),
]


@pytest.mark.parametrize(("kind", "status", "error_type", "code"), OPENAI_ERRORS)
def test_openai_forced_errors_use_openais_envelope(
    simulator: str, kind: str, status: int, error_type: str, code: object
) -> None:
    response = openai_generate(simulator, f"a cat [sim:{kind}]")

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert error["message"]
    assert last_call(simulator)["outcome"] == kind


def test_openai_quota_carries_every_retry_hint(simulator: str) -> None:
    response = openai_generate(simulator, "[sim:quota]")

    assert float(response.headers["retry-after"]) > 0
    assert int(response.headers["retry-after-ms"]) > 0
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


def test_openai_moderation_names_the_stage(simulator: str) -> None:
    output = openai_generate(simulator, "[sim:content_policy]").json()["error"]
    prompt = openai_generate(simulator, "[sim:prompt_blocked]").json()["error"]

    assert output["moderation_details"]["moderation_stage"] == "output"
    assert prompt["moderation_details"]["moderation_stage"] == "input"


def test_openai_rejects_what_the_real_endpoint_rejects(simulator: str) -> None:
    bad_size = openai_generate(simulator, "a cat", size="999x999")
    response_format = openai_generate(simulator, "a cat", response_format="b64_json")
    no_key = httpx.post(f"{simulator}/openai/v1/images/generations",
                        json={"model": "gpt-image-1.5", "prompt": "a cat"}, timeout=5)

    assert (bad_size.status_code, bad_size.json()["error"]["param"]) == (400, "size")
    assert response_format.json()["error"]["code"] == "unknown_parameter"
    assert no_key.status_code == 401


# ---------------------------------------------------------------- broken answers (all vendors)


def _requests(sim: str, prompt: str) -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    return {
        "openai": (f"{sim}/openai/v1/images/generations",
                   {"model": "gpt-image-1.5", "prompt": prompt}, BEARER),
        "gemini": (f"{sim}/gemini/v1beta/models/gemini-3-pro-image-preview:generateContent",
                   {"contents": [{"parts": [{"text": prompt}]}]}, GEMINI_KEY),
        "bfl": (f"{sim}/bfl/v1/flux-2-pro", {"prompt": prompt}, BFL_KEY),
        "seedream": (f"{sim}/ark/api/v3/images/generations",
                     {"model": "seedream-4-5-251128", "prompt": prompt, "size": "1K"}, BEARER),
        "recraft": (f"{sim}/recraft/v1/images/generations",
                    {"model": "recraftv4", "prompt": prompt}, BEARER),
        "aggregator": (f"{sim}/aggregator/v1/images/generations",
                       {"model": "gemini-3-pro-image-preview", "prompt": prompt}, BEARER),
    }


VENDORS = ["openai", "gemini", "bfl", "seedream", "recraft", "aggregator"]


@pytest.mark.parametrize("vendor", VENDORS)
def test_garbage_html_is_a_502_html_page(simulator: str, vendor: str) -> None:
    url, body, headers = _requests(simulator, "a cat [sim:garbage_html]")[vendor]
    response = post(url, body, headers)

    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert "<html>" in response.text


@pytest.mark.parametrize("vendor", VENDORS)
def test_truncated_json_is_a_200_that_does_not_parse(simulator: str, vendor: str) -> None:
    url, body, headers = _requests(simulator, "a cat [sim:truncated_json]")[vendor]
    response = post(url, body, headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


@pytest.mark.parametrize("vendor", VENDORS)
def test_hang_outlasts_the_client_and_leaves_no_call_in_flight(simulator: str, vendor: str) -> None:
    url, body, headers = _requests(simulator, "a cat [sim:hang]")[vendor]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url, json=body, headers=headers, timeout=httpx.Timeout(5, read=0.3))

    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        stats = httpx.get(f"{simulator}/_sim/stats", timeout=5).json()
        if all(s["in_flight"] == 0 for s in stats.values()):
            break
        time.sleep(0.1)
    assert all(s["in_flight"] == 0 for s in stats.values())
    assert last_call(simulator)["outcome"] == "hang"


# ---------------------------------------------------------------- Gemini


def gemini_generate(sim: str, prompt: str, model: str = "gemini-3-pro-image-preview",
                    image_config: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                             "imageConfig": image_config or {}},
    }
    return post(f"{sim}/gemini/v1beta/models/{model}:generateContent", body, GEMINI_KEY)


@pytest.mark.parametrize(("aspect_ratio", "image_size", "pixels"), [
    ("1:1", "1K", (1024, 1024)),
    ("16:9", "1K", (1344, 768)),
    ("9:16", "2K", (1536, 2688)),
])
def test_gemini_success_is_an_inline_png_sized_by_aspect_ratio_and_image_size(
    simulator: str, aspect_ratio: str, image_size: str, pixels: tuple[int, int]
) -> None:
    response = gemini_generate(simulator, "a fox",
                               image_config={"aspectRatio": aspect_ratio, "imageSize": image_size})

    assert response.status_code == 200
    body = response.json()
    parts = body["candidates"][0]["content"]["parts"]
    inline = [p["inlineData"] for p in parts if "inlineData" in p]
    assert inline[0]["mimeType"] == "image/png"
    assert decode_image(base64.b64decode(inline[0]["data"])).size == pixels
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert body["modelVersion"] == "gemini-3-pro-image-preview" and body["responseId"]
    assert body["usageMetadata"]["totalTokenCount"] > 0


GEMINI_ERRORS = [
    ("overloaded", 503, "UNAVAILABLE"),
    ("server_error", 500, "INTERNAL"),
    ("deadline", 504, "DEADLINE_EXCEEDED"),
    ("quota", 429, "RESOURCE_EXHAUSTED"),
    ("auth", 400, "INVALID_ARGUMENT"),
    ("billing", 402, "RESOURCE_EXHAUSTED"),
    ("invalid_request", 400, "INVALID_ARGUMENT"),
]


@pytest.mark.parametrize(("kind", "status", "canonical"), GEMINI_ERRORS)
def test_gemini_forced_errors_use_googles_envelope(
    simulator: str, kind: str, status: int, canonical: str
) -> None:
    response = gemini_generate(simulator, f"a fox [sim:{kind}]")

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (status, canonical)
    assert last_call(simulator)["outcome"] == kind


def test_gemini_overload_says_high_demand(simulator: str) -> None:
    message = gemini_generate(simulator, "[sim:overloaded]").json()["error"]["message"]

    assert "high demand" in message


def test_gemini_quota_hints_retry_in_retry_info_and_message(simulator: str) -> None:
    error = gemini_generate(simulator, "[sim:quota]").json()["error"]

    retry_info = [d for d in error["details"] if d["@type"].endswith("google.rpc.RetryInfo")]
    assert retry_info[0]["retryDelay"] == "7s"
    assert "Please retry in 7.2s." in error["message"]


def test_gemini_invalid_key_is_a_400_with_reason_api_key_invalid(simulator: str) -> None:
    error = gemini_generate(simulator, "[sim:auth]").json()["error"]

    reasons = [d.get("reason") for d in error["details"]]
    assert "API_KEY_INVALID" in reasons


@pytest.mark.parametrize(("marker", "finish_reason"), [
    ("[sim:content_policy]", "IMAGE_SAFETY"),
    ("[sim:no_image:NO_IMAGE]", "NO_IMAGE"),
    ("[sim:content_policy:PROHIBITED_CONTENT]", "PROHIBITED_CONTENT"),
])
def test_gemini_blocks_arrive_as_200_with_a_finish_reason_and_no_parts(
    simulator: str, marker: str, finish_reason: str
) -> None:
    response = gemini_generate(simulator, f"a fox {marker}")

    assert response.status_code == 200
    candidate = response.json()["candidates"][0]
    assert candidate["finishReason"] == finish_reason
    assert "content" not in candidate


def test_gemini_prompt_block_has_feedback_and_no_candidates(simulator: str) -> None:
    body = gemini_generate(simulator, "[sim:prompt_blocked]").json()

    assert body["promptFeedback"]["blockReason"] == "PROHIBITED_CONTENT"
    assert "candidates" not in body


def test_gemini_no_image_is_a_text_only_answer(simulator: str) -> None:
    parts = gemini_generate(simulator, "[sim:no_image]").json()["candidates"][0]["content"]["parts"]

    assert parts and all("text" in p and "inlineData" not in p for p in parts)


def test_gemini_without_an_api_key_is_refused(simulator: str) -> None:
    response = httpx.post(
        f"{simulator}/gemini/v1beta/models/gemini-2.5-flash-image:generateContent",
        json={"contents": [{"parts": [{"text": "a fox"}]}]}, timeout=5)

    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("vendor", ["openai", "gemini", "aggregator"])
def test_bad_base64_is_well_formed_json_whose_image_does_not_decode(
    simulator: str, vendor: str
) -> None:
    url, body, headers = _requests(simulator, "a cat [sim:bad_base64]")[vendor]
    answer = post(url, body, headers).json()
    encoded = (answer["data"][0]["b64_json"] if vendor != "gemini" else
               answer["candidates"][0]["content"]["parts"][-1]["inlineData"]["data"])

    with pytest.raises(OSError):
        decode_image(base64.b64decode(encoded))


@pytest.mark.parametrize("vendor", ["openai", "seedream", "recraft", "aggregator"])
def test_no_image_elsewhere_is_a_200_with_empty_data(simulator: str, vendor: str) -> None:
    url, body, headers = _requests(simulator, "a cat [sim:no_image]")[vendor]
    response = post(url, body, headers)

    assert response.status_code == 200
    assert response.json()["data"] == []
