"""Every image is verified before it leaves ``providers/``: checked (Pillow) or parsed (SVG).

A vendor answer that is not a real image (bad base64, an HTML page behind a URL, a truncated
PNG) is a SERVER_ERROR, never a result. The check reads the header and the file's structure, not
its pixels: decoding a 1024x1024 PNG costs several milliseconds of CPU, more than the rest of a
job's path. ``decode_fully`` (IMGQ_VERIFY_IMAGES_FULLY) decodes them too, for the little the
check lets through: a JPEG or WebP cut short after its header, pixel data that does not decode.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from PIL import Image

from providers.errors import ErrorClass, ProviderError
from providers.types import GeneratedImage

SVG_TYPE = "image/svg+xml"
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)")


def not_an_image(model_id: str, why: str) -> ProviderError:
    return ProviderError(ErrorClass.SERVER_ERROR, f"{model_id}: answer is not an image ({why})")


def verify_image(model_id: str, data: bytes, declared_type: str | None = None) -> GeneratedImage:
    """Check ``data`` is an image; return it with its real content type and dimensions.

    Pillow reads the header (format and declared size; a decompression bomb is refused there),
    and ``Image.verify`` walks a PNG's chunks to its end with their checksums, which finds a
    truncated or corrupted PNG without decoding it."""
    head = data.lstrip()[:256].lower()
    if (declared_type or "").startswith(SVG_TYPE) or head.startswith((b"<?xml", b"<svg")):
        return _verify_svg(model_id, data)
    try:
        with _bombs_refused(), Image.open(io.BytesIO(data)) as image:
            image_format, width, height = image.format, image.width, image.height
            image.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for undecodable data
        raise not_an_image(model_id, f"{type(exc).__name__}: {exc}") from None
    if not image_format or width <= 0 or height <= 0:
        raise not_an_image(model_id, f"no format or size in its header ({width}x{height})")
    content_type = Image.MIME.get(image_format, "application/octet-stream")
    return GeneratedImage(data, content_type, width, height)


def decode_fully(model_id: str, image: GeneratedImage) -> None:
    """Decode every pixel of a checked raster image; SERVER_ERROR if that fails."""
    if image.content_type == SVG_TYPE:
        return
    try:
        with _bombs_refused(), Image.open(io.BytesIO(image.data)) as opened:
            opened.load()
    except Exception as exc:  # noqa: BLE001 - as in verify_image
        raise not_an_image(model_id, f"{type(exc).__name__}: {exc}") from None


@contextmanager
def _bombs_refused() -> Iterator[None]:
    """Pillow's decompression-bomb warning (an image too large to decode) raised as an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def decode_base64_image(model_id: str, encoded: str) -> GeneratedImage:
    """Verify a ``b64_json`` / ``inlineData.data`` payload (a ``data:`` URL prefix is allowed)."""
    declared_type = None
    if encoded.startswith("data:"):
        header, _, encoded = encoded.partition(",")
        declared_type = header[5:].split(";")[0] or None
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise not_an_image(model_id, f"bad base64: {exc}") from None
    return verify_image(model_id, data, declared_type)


def download_image(
    client: httpx.Client, model_id: str, url: str, timeout: httpx.Timeout
) -> GeneratedImage:
    """Fetch a vendor's short-lived result URL at once and verify what came back."""
    response = client.get(url, timeout=timeout, follow_redirects=True)
    if response.status_code != 200:
        raise ProviderError(
            ErrorClass.SERVER_ERROR,
            f"{model_id}: image download answered HTTP {response.status_code}",
            vendor_status=response.status_code,
        )
    return verify_image(model_id, response.content, response.headers.get("content-type"))


def _verify_svg(model_id: str, data: bytes) -> GeneratedImage:
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise not_an_image(model_id, f"SVG does not parse: {exc}") from None
    if root.tag.rsplit("}", 1)[-1] != "svg":
        raise not_an_image(model_id, f"XML root is <{root.tag}>, not <svg>")
    width, height = _length(root.get("width")), _length(root.get("height"))
    view_box = (root.get("viewBox") or "").replace(",", " ").split()
    if (width is None or height is None) and len(view_box) == 4:
        width = width if width is not None else _length(view_box[2])
        height = height if height is not None else _length(view_box[3])
    return GeneratedImage(data, SVG_TYPE, width or 0, height or 0)


def _length(value: str | None) -> int | None:
    if value is None or value.strip().endswith("%"):
        return None
    match = _NUMBER.match(value or "")
    return round(float(match.group(1))) if match else None
