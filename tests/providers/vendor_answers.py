"""Vendor answers for adapter unit tests: bodies copied from /work/shared/providers.md, and a
fake vendor (httpx.MockTransport) that serves one wire format's generate call, BFL's polling and
result downloads, recording every request it saw."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from providers.catalogue import ModelSpec, load_catalogue

CDN = "https://cdn.vendor.test"
POLLING_URL = "https://api.eu.bfl.test/v1/get_result?id=gen_abc123xyz"
SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 480">'
    b'<rect width="640" height="480" fill="#e33"/></svg>'
)
MODEL_FOR_FORMAT = {
    "gemini": "gemini-3-pro-image-preview",
    "openai_images": "gpt-image-1.5",
    "bfl": "flux-2-pro",
    "seedream": "seedream-4.5",
    "recraft": "recraftv4",
    "openai_compatible": "aggregator-seedream-4",
}
REQUEST_ID_HEADER_FORMATS = frozenset({"openai_images", "seedream"})
Handler = Callable[[httpx.Request], httpx.Response]


def png(width: int = 32, height: int = 24) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def model(wire_format_or_id: str, **changes: Any) -> ModelSpec:
    """A shipped catalogue model at a fake vendor, keyless (no key needed), with fast polling
    for BFL."""
    model_id = MODEL_FOR_FORMAT.get(wire_format_or_id, wire_format_or_id)
    spec = load_catalogue().model(model_id)
    spec = spec.model_copy(update={"base_url": f"https://{spec.vendor}.vendor.test/v1",
                                   "keyless": True})
    if spec.wire_format == "bfl":
        spec = spec.model_copy(update={"options": {**spec.options, "poll_interval_s": 0.001}})
    return spec.model_copy(update=changes)


def json_answer(
    status: int, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers={
        "content-type": "application/json", **(headers or {})})


def success_body(wire_format: str, image: bytes) -> dict[str, Any]:
    """The vendor's documented 200 for one image (BFL: the submit answer)."""
    if wire_format == "gemini":
        return {
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Here is your image"},
                {"inlineData": {"mimeType": "image/png", "data": b64(image)}},
            ]}, "finishReason": "STOP", "index": 0}],
            "modelVersion": "gemini-3-pro-image-preview",
            "responseId": "Y8tsaInkFYLsx_APseqW6QY",
        }
    if wire_format in ("openai_images", "openai_compatible"):
        return {"created": 1713833628, "data": [{"b64_json": b64(image)}],
                "output_format": "png", "size": "1024x1024", "quality": "high"}
    if wire_format == "bfl":
        return {"id": "gen_abc123xyz", "polling_url": POLLING_URL, "cost": 3.0,
                "input_mp": 0.0, "output_mp": 1.05}
    if wire_format == "seedream":
        return {"model": "seedream-4-5-251128", "created": 1757469561,
                "data": [{"url": f"{CDN}/seedream/1.png", "size": "2048x2048"}],
                "usage": {"generated_images": 1, "output_tokens": 16280, "total_tokens": 16280}}
    if wire_format == "recraft":
        return {"created": 1730000000, "credits": 40,
                "data": [{"image_id": "2f1c-uuid", "url": f"{CDN}/recraft/1.png",
                          "revised_prompt": None}]}
    raise ValueError(wire_format)


@dataclass
class FakeVendor:
    """Answers the generate POST with ``answer``; serves BFL polls and CDN downloads."""

    wire_format: str
    answer: Handler
    image: bytes = field(default_factory=png)
    polls: list[httpx.Response] = field(default_factory=list)  # BFL answers, in order
    seen: list[httpx.Request] = field(default_factory=list)

    @classmethod
    def succeeding(cls, wire_format: str, image: bytes | None = None) -> FakeVendor:
        image = image if image is not None else png()
        body = success_body(wire_format, image)
        headers = {"x-request-id": "req-7f3a"} if wire_format in REQUEST_ID_HEADER_FORMATS else {}
        return cls(wire_format, lambda _: json_answer(200, body, headers), image=image)

    @classmethod
    def answering(
        cls, wire_format: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> FakeVendor:
        return cls(wire_format, lambda _: json_answer(status, body, headers))

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.method == "POST":
            return self.answer(request)
        if str(request.url).startswith(CDN):
            return httpx.Response(200, content=self.image, headers={"content-type": "image/png"})
        if str(request.url) == POLLING_URL:
            if self.polls:
                return self.polls.pop(0)
            return json_answer(200, {"id": "gen_abc123xyz", "status": "Ready",
                                     "result": {"sample": f"{CDN}/bfl/sample.png"}})
        return httpx.Response(404, text="unexpected URL in a test")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def posted(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.seen if r.method == "POST"]


def bfl_poll(status: str, **extra: Any) -> httpx.Response:
    return json_answer(200, {"id": "gen_abc123xyz", "status": status, **extra})
