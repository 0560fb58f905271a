"""The official SDKs accept the simulator as the real API: successes parse, errors raise the SDK's
own exception types. If an SDK rejects an answer, the simulator is wrong."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from PIL import Image


def openai_client(sim: str, base: str = "openai") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim}/{base}/v1", api_key="x", max_retries=0, timeout=10)


@pytest.fixture()
def gemini(simulator: str) -> Iterator[genai.Client]:
    # retry_options unset: the SDK makes exactly one attempt.
    client = genai.Client(api_key="x", http_options=types.HttpOptions(
        base_url=f"{simulator}/gemini/", timeout=10_000))
    yield client
    client.close()


def test_openai_sdk_parses_an_image_generation(simulator: str) -> None:
    with openai_client(simulator) as client:
        result = client.images.generate(
            model="gpt-image-1.5", prompt="a red fox in snow", size="1024x1024")

    assert result.data is not None and result.data[0].b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (1024, 1024)
    assert result.usage is not None and result.usage.output_tokens > 0


@pytest.mark.parametrize(("kind", "error_type", "code"), [
    ("quota", openai.RateLimitError, "rate_limit_exceeded"),
    ("billing", openai.RateLimitError, "insufficient_quota"),
    ("content_policy", openai.BadRequestError, "moderation_blocked"),
    ("invalid_request", openai.BadRequestError, "invalid_value"),
    ("auth", openai.AuthenticationError, "invalid_api_key"),
    ("overloaded", openai.InternalServerError, "server_is_overloaded"),
    ("server_error", openai.InternalServerError, "server_error"),
])
def test_openai_sdk_raises_its_own_error_types(
    simulator: str, kind: str, error_type: type[openai.APIStatusError], code: str
) -> None:
    with openai_client(simulator) as client, pytest.raises(error_type) as raised:
        client.images.generate(
            model="gpt-image-1.5", prompt=f"a fox [sim:{kind}]", size="1024x1024")

    assert raised.value.code == code
    assert raised.value.request_id


def test_openai_sdk_works_against_the_aggregator(simulator: str) -> None:
    with openai_client(simulator, "aggregator") as client:
        result = client.images.generate(model="seedream-4-5-251128", prompt="a temple",
                                        size="1024x1024", response_format="b64_json")
        with pytest.raises(openai.InternalServerError) as raised:
            client.images.generate(model="gemini-3-pro-image-preview",
                                   prompt="a temple [sim:overloaded]", size="1024x1024")

    assert result.data is not None and result.data[0].b64_json
    assert raised.value.status_code == 503 and "UNAVAILABLE" in raised.value.message


def test_genai_sdk_parses_an_inline_png(gemini: genai.Client) -> None:
    response = gemini.models.generate_content(
        model="gemini-2.5-flash-image",
        contents="a red fox in snow",
        config=types.GenerateContentConfig(response_modalities=["IMAGE"],
                                           image_config=types.ImageConfig(aspect_ratio="16:9")),
    )

    assert response.candidates and response.candidates[0].content
    parts = response.candidates[0].content.parts or []
    inline = [p.inline_data for p in parts if p.inline_data is not None]
    assert inline[0].mime_type == "image/png" and inline[0].data is not None
    assert Image.open(io.BytesIO(inline[0].data)).size == (1344, 768)
    assert response.response_id and response.model_version == "gemini-2.5-flash-image"


@pytest.mark.parametrize(("kind", "error_type", "code", "status"), [
    ("overloaded", genai_errors.ServerError, 503, "UNAVAILABLE"),
    ("server_error", genai_errors.ServerError, 500, "INTERNAL"),
    ("deadline", genai_errors.ServerError, 504, "DEADLINE_EXCEEDED"),
    ("quota", genai_errors.ClientError, 429, "RESOURCE_EXHAUSTED"),
    ("auth", genai_errors.ClientError, 400, "INVALID_ARGUMENT"),
    ("billing", genai_errors.ClientError, 402, "RESOURCE_EXHAUSTED"),
])
def test_genai_sdk_raises_its_own_error_types(
    gemini: genai.Client, kind: str, error_type: type[genai_errors.APIError], code: int, status: str
) -> None:
    with pytest.raises(error_type) as raised:
        gemini.models.generate_content(
            model="gemini-3-pro-image-preview", contents=f"a fox [sim:{kind}]")

    assert (raised.value.code, raised.value.status) == (code, status)


def test_genai_sdk_exposes_blocks_as_finish_reason_and_prompt_feedback(
    gemini: genai.Client,
) -> None:
    client = gemini
    unsafe = client.models.generate_content(model="gemini-3-pro-image-preview",
                                            contents="a fox [sim:content_policy]")
    blocked = client.models.generate_content(model="gemini-3-pro-image-preview",
                                             contents="a fox [sim:prompt_blocked]")

    assert unsafe.candidates
    assert unsafe.candidates[0].finish_reason == types.FinishReason.IMAGE_SAFETY
    assert blocked.prompt_feedback is not None
    assert blocked.prompt_feedback.block_reason == types.BlockedReason.PROHIBITED_CONTENT
