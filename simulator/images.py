"""Real, deterministic pictures: the prompt's hash picks a background and a few shapes."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "svg": "image/svg+xml",
}
# Bytes that decode as base64 but are no image: what a corrupted upstream answer looks like.
NOT_AN_IMAGE = b"\x00\x01corrupted upstream payload, not an image\xff\xfe" * 4


@dataclass(frozen=True)
class ImageSpec:
    prompt: str
    width: int
    height: int
    output_format: str = "png"  # png | jpeg | webp | svg
    transparent: bool = False
    corrupt: bool = False

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.output_format]


@dataclass(frozen=True)
class _Shape:
    kind: str  # "ellipse" | "rect"
    box: tuple[int, int, int, int]
    rgb: tuple[int, int, int]


def _plan(prompt: str, width: int, height: int) -> tuple[tuple[int, int, int], list[_Shape]]:
    digest = hashlib.sha512(prompt.encode("utf-8")).digest()  # 64 bytes: up to 5 shapes
    background = (digest[0], digest[1], digest[2])
    shapes = []
    for i in range(2 + digest[3] % 4):
        b = digest[4 + i * 7 : 11 + i * 7]
        x0, y0 = b[0] * width // 320, b[1] * height // 320
        x1 = x0 + max(8, (64 + b[2]) * width // 400)
        y1 = y0 + max(8, (64 + b[3]) * height // 400)
        kind = "ellipse" if b[4] % 2 else "rect"
        shapes.append(_Shape(kind, (x0, y0, min(x1, width - 1), min(y1, height - 1)),
                             (b[4], b[5], b[6])))
    return background, shapes


@lru_cache(maxsize=256)
def render(spec: ImageSpec) -> bytes:
    """The encoded image (or SVG document) for a spec; cached, as prompts repeat in benchmarks."""
    if spec.corrupt:
        return NOT_AN_IMAGE
    if spec.output_format == "svg":
        return _render_svg(spec).encode("utf-8")
    background, shapes = _plan(spec.prompt, spec.width, spec.height)
    mode = "RGBA" if spec.transparent and spec.output_format != "jpeg" else "RGB"
    fill = (*background, 0) if mode == "RGBA" else background
    image = Image.new(mode, (spec.width, spec.height), fill)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        paint = (*shape.rgb, 255) if mode == "RGBA" else shape.rgb
        if shape.kind == "ellipse":
            draw.ellipse(shape.box, fill=paint)
        else:
            draw.rectangle(shape.box, fill=paint)
    out = io.BytesIO()
    if spec.output_format == "png":
        image.save(out, format="PNG", compress_level=1)
    elif spec.output_format == "jpeg":
        image.save(out, format="JPEG", quality=85)
    else:
        image.save(out, format="WEBP", quality=80, method=0)
    return out.getvalue()


def _render_svg(spec: ImageSpec) -> str:
    background, shapes = _plan(spec.prompt, spec.width, spec.height)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{spec.width}" height="{spec.height}" '
        f'viewBox="0 0 {spec.width} {spec.height}">',
        f'<rect width="100%" height="100%" fill="{_hex(background)}"/>',
    ]
    for shape in shapes:
        x0, y0, x1, y1 = shape.box
        if shape.kind == "ellipse":
            parts.append(
                f'<ellipse cx="{(x0 + x1) / 2}" cy="{(y0 + y1) / 2}" rx="{(x1 - x0) / 2}" '
                f'ry="{(y1 - y0) / 2}" fill="{_hex(shape.rgb)}"/>'
            )
        else:
            parts.append(
                f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
                f'fill="{_hex(shape.rgb)}"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
