"""What each wire format sends, and its own answers: Gemini ratios, BFL polling, Seedream partial
results, Recraft SVG, gateway URLs (httpx.MockTransport)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from providers.adapters.bfl import snap_dimension
from providers.adapters.gemini import nearest_aspect_ratio
from providers.adapters.retry_hints import parse_duration_s, parse_retry_after_s
from providers.calls import call
from providers.errors import ErrorClass, ProviderError
from providers.types import GenerationRequest
from tests.providers.vendor_answers import (
    CDN,
    POLLING_URL,
    SVG,
    FakeVendor,
    b64,
    bfl_poll,
    json_answer,
    model,
    png,
    success_body,
)


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [(1024, 1024, "1:1"), (1920, 1080, "16:9"), (1080, 1920, "9:16"), (1536, 1024, "3:2"),
     (2520, 1080, "21:9"), (1000, 1010, "1:1")],
)
def test_gemini_aspect_ratio_is_the_nearest_supported(width: int, height: int, ratio: str) -> None:
    assert nearest_aspect_ratio(width, height) == ratio


def test_gemini_sends_image_size_only_for_models_that_support_it() -> None:
    sizes = {}
    for model_id in ("gemini-3-pro-image-preview", "gemini-2.5-flash-image"):
        vendor = FakeVendor.succeeding("gemini")
        with vendor.client() as client:
            call(client, model(model_id), GenerationRequest("a fox", width=1344, height=768))
        body = vendor.posted()[0]
        assert body["generationConfig"]["responseModalities"] == ["IMAGE"]
        assert body["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
        assert vendor.seen[0].url.path == f"/v1/v1beta/models/{model_id}:generateContent"
        sizes[model_id] = body["generationConfig"]["imageConfig"].get("imageSize")
    assert sizes == {"gemini-3-pro-image-preview": "1K", "gemini-2.5-flash-image": None}


def test_gemini_skips_thought_images_and_text_parts() -> None:
    final, thought = png(40, 40), png(8, 8)
    body = success_body("gemini", final)
    body["candidates"][0]["content"]["parts"].insert(
        0, {"inlineData": {"mimeType": "image/png", "data": b64(thought)}, "thought": True})
    vendor = FakeVendor.answering("gemini", 200, body)

    with vendor.client() as client:
        result = call(client, model("gemini"), GenerationRequest("a fox"))

    assert [image.data for image in result.images] == [final]


def test_openai_sends_model_size_and_quality_and_no_response_format() -> None:
    vendor = FakeVendor.succeeding("openai_images")

    with vendor.client() as client:
        call(client, model("openai_images"),
             GenerationRequest("a fox", width=1536, height=1024, quality="high"))

    body = vendor.posted()[0]
    assert (body["model"], body["size"], body["quality"], body["n"]) == (
        "gpt-image-1.5", "1536x1024", "high", 1)
    assert "response_format" not in body
    assert vendor.seen[0].url.path == "/v1/images/generations"


def test_bfl_polls_only_the_returned_url_until_ready_then_downloads_once() -> None:
    vendor = FakeVendor.succeeding("bfl")
    vendor.polls = [bfl_poll("Pending", progress=0.2), bfl_poll("Pending", progress=0.7)]

    with vendor.client() as client:
        result = call(client, model("bfl"), GenerationRequest("a fox", width=1000, height=700))

    gets = [str(r.url) for r in vendor.seen if r.method == "GET"]
    assert gets == [POLLING_URL] * 3 + [f"{CDN}/bfl/sample.png"]
    assert vendor.posted() == [{"prompt": "a fox", "width": 1008, "height": 704}]
    assert vendor.seen[0].url.path == "/v1/flux-2-pro"
    assert (result.request_id, result.vendor_cost) == ("gen_abc123xyz", 3.0)


def test_bfl_poll_server_errors_are_retried_but_the_submit_is_not() -> None:
    vendor = FakeVendor.succeeding("bfl")
    vendor.polls = [httpx.Response(502, text="bad gateway"), json_answer(503, {"detail": "busy"})]

    with vendor.client() as client:
        result = call(client, model("bfl"), GenerationRequest("a fox"))

    assert len(result.images) == 1
    assert len(vendor.posted()) == 1


def test_bfl_poll_failing_every_retry_is_a_server_error() -> None:
    vendor = FakeVendor.succeeding("bfl")
    vendor.polls = [json_answer(500, {"detail": "internal"})] * 3

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("bfl"), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert len(vendor.posted()) == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [("Request Moderated", ErrorClass.CONTENT_POLICY),
     ("Content Moderated", ErrorClass.CONTENT_POLICY),
     ("Error", ErrorClass.SERVER_ERROR), ("Task not found", ErrorClass.SERVER_ERROR)],
)
def test_bfl_terminal_poll_status_is_classified(status: str, expected: ErrorClass) -> None:
    vendor = FakeVendor.succeeding("bfl")
    vendor.polls = [bfl_poll("Pending"), bfl_poll(status, details={})]

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("bfl"), GenerationRequest("a fox"))

    assert (caught.value.error_class, caught.value.request_id) == (expected, "gen_abc123xyz")


def test_bfl_task_still_pending_at_the_models_timeout_is_a_timeout() -> None:
    vendor = FakeVendor.succeeding("bfl")
    vendor.polls = [bfl_poll("Pending")] * 10_000

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("bfl", timeout_s=0.3), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.TIMEOUT


@pytest.mark.parametrize(("value", "low", "high", "snapped"),
                         [(1000, 64, 2048, 1008), (10, 64, 2048, 64), (5000, 64, 2048, 2048),
                          (1023, 70, 1030, 1024)])
def test_bfl_dimensions_snap_to_multiples_of_16_within_bounds(
    value: int, low: int, high: int, snapped: int
) -> None:
    assert snap_dimension(value, low, high) == snapped


def test_seedream_scales_small_sizes_up_and_sends_catalogue_options() -> None:
    vendor = FakeVendor.succeeding("seedream")

    with vendor.client() as client:
        call(client, model("seedream"), GenerationRequest("a fox", width=1024, height=512))

    body = vendor.posted()[0]
    width, height = (int(side) for side in body["size"].split("x"))
    assert width * height >= 2560 * 1440 and width % 16 == 0 and height % 16 == 0
    assert width / height == pytest.approx(2.0, rel=0.02)
    assert (body["model"], body["watermark"], body["response_format"]) == (
        "seedream-4-5-251128", False, "url")


def test_seedream_keeps_good_images_of_a_partial_answer_and_bills_only_those() -> None:
    body = success_body("seedream", png())
    body["data"].append({"error": {"code": "OutputImageSensitiveContentDetected",
                                   "message": "The output image may contain sensitive info."}})
    vendor = FakeVendor.answering("seedream", 200, body)
    spec = model("seedream")

    with vendor.client() as client:
        result = call(client, spec, GenerationRequest("a fox", n=2))

    assert len(result.images) == 1
    assert result.cost_usd == pytest.approx(spec.price_per_image_usd)


def test_seedream_answer_whose_every_item_failed_is_classified_by_the_item_code() -> None:
    body = {"model": "seedream-4-5-251128", "data": [
        {"error": {"code": "OutputImageSensitiveContentDetected", "message": "sensitive"}}]}
    vendor = FakeVendor.answering("seedream", 200, body)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("seedream"), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.CONTENT_POLICY
    assert caught.value.vendor_code == "OutputImageSensitiveContentDetected"


def test_recraft_vector_model_returns_svg_with_dimensions_from_the_viewbox() -> None:
    vendor = FakeVendor.succeeding("recraft", SVG)

    with vendor.client() as client:
        result = call(client, model("recraftv4_vector"), GenerationRequest("a fox logo"))

    assert vendor.posted()[0]["model"] == "recraftv4_vector"
    image = result.images[0]
    assert (image.content_type, image.width, image.height) == ("image/svg+xml", 640, 480)
    assert result.vendor_cost == 40.0


@pytest.mark.parametrize(("answer", "why"), [
    (png(), "vector model answered image/png"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><rect", "SVG does not parse"),
    (b"<?xml version='1.0'?><html><body/></html>", "not <svg>"),
])
def test_recraft_vector_answer_that_is_not_a_valid_svg_is_a_server_error(
    answer: bytes, why: str
) -> None:
    vendor = FakeVendor.succeeding("recraft", answer)

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("recraftv4_vector"), GenerationRequest("a fox logo"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR
    assert why in caught.value.message


def test_gateway_url_answer_is_downloaded_and_verified() -> None:
    vendor = FakeVendor.answering("openai_compatible", 200, {"data": [{"url": f"{CDN}/x.png"}]})

    with vendor.client() as client:
        result = call(client, model("openai_compatible"), GenerationRequest("a fox"))

    assert result.images[0].data == vendor.image
    assert vendor.posted()[0]["response_format"] == "b64_json"


def test_gateway_answer_without_data_is_a_server_error() -> None:
    vendor = FakeVendor.answering("openai_compatible", 200, {"task_id": "t1", "status": "queued"})

    with vendor.client() as client, pytest.raises(ProviderError) as caught:
        call(client, model("openai_compatible"), GenerationRequest("a fox"))

    assert caught.value.error_class is ErrorClass.SERVER_ERROR


@pytest.mark.parametrize(("text", "seconds"),
                         [("26s", 26.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5),
                          ("1h2m3s", 3723.0), ("soon", None), ("26", None)])
def test_vendor_durations_parse_to_seconds(text: str, seconds: float | None) -> None:
    assert parse_duration_s(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_retry_after_accepts_an_http_date() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after_s("Sun, 01 Mar 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after_s("12", now=now) == 12.0
    assert parse_retry_after_s("whenever", now=now) is None
