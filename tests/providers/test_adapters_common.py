"""Behaviour every adapter shares, proven for each of the six wire formats (httpx.MockTransport).

Success verifies and measures the image and bills only then; garbage (an HTML page, truncated
JSON, base64 or bytes that are not an image) is a SERVER_ERROR, never an image; our timeout is
TIMEOUT and other transport errors SERVER_ERROR; nothing httpx escapes; Unicode prompts arrive
intact; a model without a key fails AUTH before any traffic, unless it is keyless.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import httpx
import pytest
from PIL import Image

from providers.adapters import ADAPTERS, adapter_for
from providers.adapters.common import KEYLESS_API_KEY
from providers.calls import call
from providers.catalogue import WIRE_FORMATS
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest
from tests.providers.vendor_answers import (
    MODEL_FOR_FORMAT,
    FakeVendor,
    json_answer,
    model,
    png,
    success_body,
)

FORMATS = sorted(MODEL_FOR_FORMAT)
# Where the image travels inline (base64) rather than behind a URL.
INLINE_FORMATS = {"gemini", "openai_images", "openai_compatible"}


def prompt_of(wire_format: str, body: dict[str, Any]) -> str:
    if wire_format == "gemini":
        return str(body["contents"][0]["parts"][0]["text"])
    return str(body["prompt"])


def test_every_catalogue_wire_format_has_an_adapter() -> None:
    assert set(ADAPTERS) == WIRE_FORMATS
    assert all(adapter_for(name) is ADAPTERS[name] for name in WIRE_FORMATS)
    with pytest.raises(KeyError, match="known"):
        adapter_for("carrier_pigeon")


@pytest.mark.parametrize("wire_format", FORMATS)
def test_success_returns_verified_image_with_dimensions_and_cost(wire_format: str) -> None:
    image = png(48, 32)
    vendor = FakeVendor.succeeding(wire_format, image)
    spec = model(wire_format)

    with vendor.client() as client:
        result = call(client, spec, GenerationRequest("a red fox in snow"))

    assert [(i.data, i.content_type, i.width, i.height) for i in result.images] == [
        (image, "image/png", 48, 32)
    ]
    assert result.cost_usd == pytest.approx(spec.price_per_image_usd)
    expected_request_id = {"gemini": "Y8tsaInkFYLsx_APseqW6QY", "openai_images": "req-7f3a",
                           "bfl": "gen_abc123xyz", "seedream": "req-7f3a",
                           "recraft": "2f1c-uuid", "openai_compatible": None}
    assert result.request_id == expected_request_id[wire_format]


@pytest.mark.parametrize("wire_format", FORMATS)
def test_unicode_prompt_is_sent_intact_as_utf8_json(wire_format: str) -> None:
    prompt = "Ein Fuchs im Schnee, 雪の中の狐, лиса 🦊 — «aquarelle»"
    vendor = FakeVendor.succeeding(wire_format)

    with vendor.client() as client:
        call(client, model(wire_format), GenerationRequest(prompt))

    raw = next(r for r in vendor.seen if r.method == "POST").content
    assert prompt.encode("utf-8") in raw
    assert prompt_of(wire_format, json.loads(raw)) == prompt


@pytest.mark.parametrize("wire_format", FORMATS)
@pytest.mark.parametrize("status", [200, 502])
def test_html_error_page_is_a_server_error(wire_format: str, status: int) -> None:
    page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    vendor = FakeVendor(wire_format, lambda _: httpx.Response(
        status, text=page, headers={"content-type": "text/html"}))

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert caught.value.vendor_status == status


@pytest.mark.parametrize("wire_format", FORMATS)
def test_truncated_json_is_a_server_error(wire_format: str) -> None:
    text = json.dumps(success_body(wire_format, png()))
    vendor = FakeVendor(wire_format, lambda _: httpx.Response(
        200, content=text[: len(text) // 2].encode(), headers={"content-type": "application/json"}))

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert "unreadable" in caught.value.message


@pytest.mark.parametrize("wire_format", FORMATS)
def test_bytes_that_are_not_an_image_are_never_returned(wire_format: str) -> None:
    not_an_image = b"\x89PNG\r\n\x1a\n this is not really a PNG"
    vendor = FakeVendor.succeeding(wire_format, not_an_image)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert "not an image" in caught.value.message


def noisy_jpeg(size: int = 128) -> bytes:
    """A JPEG whose scan data is most of the file (noise does not compress)."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (size, size), random.Random(7).randbytes(size * size * 3)).save(
        buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.mark.parametrize("wire_format", FORMATS)
@pytest.mark.parametrize("decode_fully", [False, True])
def test_a_truncated_png_is_refused_with_or_without_the_full_decode(
        wire_format: str, decode_fully: bool) -> None:
    vendor = FakeVendor.succeeding(wire_format, png(64, 48)[:-30])  # IDAT cut, no IEND

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"), decode_fully=decode_fully)

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert "not an image" in caught.value.message


@pytest.mark.parametrize("wire_format", FORMATS)
def test_a_jpeg_cut_short_after_its_header_is_refused_by_the_full_decode_only(
        wire_format: str) -> None:
    whole = noisy_jpeg()
    cut = whole[: len(whole) * 3 // 4]
    vendor = FakeVendor.succeeding(wire_format, cut)

    with vendor.client() as client:  # the header is whole: the check without decoding passes
        checked = call(client, model(wire_format), GenerationRequest("a fox"))
    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"), decode_fully=True)

    assert [(i.content_type, i.width, i.height) for i in checked.images] == [
        ("image/jpeg", 128, 128)]
    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert "not an image" in caught.value.message and "truncated" in caught.value.message
    with FakeVendor.succeeding(wire_format, whole).client() as client:
        assert call(client, model(wire_format), GenerationRequest("a fox"),
                    decode_fully=True).images[0].data == whole


@pytest.mark.parametrize("wire_format", sorted(INLINE_FORMATS))
def test_invalid_base64_is_a_server_error(wire_format: str) -> None:
    body = success_body(wire_format, png())
    if wire_format == "gemini":
        body["candidates"][0]["content"]["parts"][1]["inlineData"]["data"] = "iVBOR%%%not-base64"
    else:
        body["data"][0]["b64_json"] = "iVBOR%%%not-base64"
    vendor = FakeVendor(wire_format, lambda _: json_answer(200, body))

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert "bad base64" in caught.value.message


@pytest.mark.parametrize("wire_format", FORMATS)
def test_success_without_any_image_is_a_server_error(wire_format: str) -> None:
    empty: dict[str, Any] = {"candidates": []} if wire_format == "gemini" else {"data": []}
    if wire_format == "bfl":
        vendor = FakeVendor.succeeding("bfl")
        vendor.polls = [json_answer(200, {"id": "gen_abc123xyz", "status": "Ready",
                                          "result": {}})]
    else:
        vendor = FakeVendor.answering(wire_format, 200, empty)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR


@pytest.mark.parametrize("wire_format", FORMATS)
@pytest.mark.parametrize(
    ("transport_error", "expected"),
    [
        (httpx.ReadTimeout, ErrorClass.TIMEOUT),
        (httpx.ConnectTimeout, ErrorClass.TIMEOUT),
        (httpx.ConnectError, ErrorClass.SERVER_ERROR),
        (httpx.RemoteProtocolError, ErrorClass.SERVER_ERROR),
    ],
)
def test_transport_errors_are_translated_never_leaked(
    wire_format: str, transport_error: type[httpx.TransportError], expected: ErrorClass
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise transport_error("simulated failure", request=request)

    vendor = FakeVendor(wire_format, fail)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model(wire_format, timeout_s=0.5), GenerationRequest("a fox"))

    assert caught.value.error_class is expected
    assert caught.value.__cause__ is None and not isinstance(caught.value, httpx.HTTPError)


@pytest.mark.parametrize("wire_format", FORMATS)
def test_the_models_timeouts_are_applied_to_the_request(wire_format: str) -> None:
    vendor = FakeVendor.succeeding(wire_format)

    with vendor.client() as client:
        call(client, model(wire_format, timeout_s=42.0, connect_timeout_s=3.0),
             GenerationRequest("a fox"))

    timeouts = vendor.seen[0].extensions["timeout"]
    assert timeouts["connect"] == 3.0
    assert 41.0 < timeouts["read"] <= 42.0


@pytest.mark.parametrize("wire_format", FORMATS)
def test_model_without_key_fails_auth_before_any_traffic(
    wire_format: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model(wire_format, keyless=False)
    monkeypatch.delenv(spec.api_key_env, raising=False)
    vendor = FakeVendor.succeeding(wire_format)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, spec, GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.AUTH
    assert f"set {spec.api_key_env}" in caught.value.message
    assert vendor.seen == []


@pytest.mark.parametrize(
    ("wire_format", "header", "value"),
    [
        ("gemini", "x-goog-api-key", "g-key"),
        ("openai_images", "authorization", "Bearer o-key"),
        ("bfl", "x-key", "b-key"),
        ("seedream", "authorization", "Bearer a-key"),
        ("recraft", "authorization", "Bearer r-key"),
        ("openai_compatible", "authorization", "Bearer x-key"),
    ],
)
def test_the_key_from_the_environment_is_sent_in_the_vendors_header(
    wire_format: str, header: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model(wire_format, keyless=False)
    monkeypatch.setenv(spec.api_key_env, value.removeprefix("Bearer "))
    vendor = FakeVendor.succeeding(wire_format)

    with vendor.client() as client:
        call(client, spec, GenerationRequest("a fox"))

    assert vendor.seen[0].headers[header] == value


@pytest.mark.parametrize(
    ("wire_format", "header", "value"),
    [
        ("gemini", "x-goog-api-key", KEYLESS_API_KEY),
        ("openai_images", "authorization", f"Bearer {KEYLESS_API_KEY}"),
        ("bfl", "x-key", KEYLESS_API_KEY),
        ("seedream", "authorization", f"Bearer {KEYLESS_API_KEY}"),
        ("recraft", "authorization", f"Bearer {KEYLESS_API_KEY}"),
        ("openai_compatible", "authorization", f"Bearer {KEYLESS_API_KEY}"),
    ],
)
def test_a_keyless_model_without_a_key_sends_the_placeholder_in_the_vendors_header(
    wire_format: str, header: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = model(wire_format, keyless=True)
    monkeypatch.delenv(spec.api_key_env, raising=False)
    vendor = FakeVendor.succeeding(wire_format)

    with vendor.client() as client:
        call(client, spec, GenerationRequest("a fox"))

    assert vendor.seen[0].headers[header] == value


def test_a_keyless_model_sends_its_key_when_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = model("openai_images", keyless=True)
    monkeypatch.setenv(spec.api_key_env, "gateway-key")
    vendor = FakeVendor.succeeding("openai_images")

    with vendor.client() as client:
        call(client, spec, GenerationRequest("a fox"))

    assert vendor.seen[0].headers["authorization"] == "Bearer gateway-key"


def test_request_the_model_cannot_serve_fails_before_any_traffic() -> None:
    vendor = FakeVendor.succeeding("openai_images")

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("openai_images"), GenerationRequest("a fox", width=2048, height=2048))

    assert caught.value.error_class is ErrorClass.INVALID_REQUEST
    assert "gpt-image-1.5 does not offer 2048x2048" in caught.value.message
    assert vendor.seen == []
