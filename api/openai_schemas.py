"""Bodies of the OpenAI-compatible gateway (``/v1/images/generations``, ``/v1/models``), in the
OpenAI Images and Models APIs' shapes, so the official SDKs read them unchanged. imagequeue's own
fields ride along as extra keys the SDKs keep (``model.health``, ``model.price_per_image_usd``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.job_spec import MAX_NAME_CHARS, SIZE_PATTERN

GATEWAY_QUALITIES = ("low", "medium", "high", "auto")
# OpenAI parameters this gateway cannot honour: refused by name (400) rather than ignored.
UNSUPPORTED_PARAMETERS = {
    "style": "describe the style in the prompt",
    "output_format": "each model returns its own format (see the answer's `output_format`)",
    "output_compression": "images are returned as the model made them",
    "partial_images": "streaming is not supported",
    "svg": "use the `logo` route or a vector model instead",
    "complexity": "it has no equivalent across vendors",
    "frame_count": "animated output is not supported",
    "frame_duration_ms": "animated output is not supported",
    "input_fidelity": "image edits are not supported",
}
MAX_USER_CHARS = 256


class ImageGenerationRequest(BaseModel):
    """The body of ``POST /v1/images/generations`` (OpenAI's ``images.generate``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="What to draw.",
                        examples=["A lighthouse at dawn, oil painting"])
    model: str | None = Field(
        default=None, max_length=MAX_NAME_CHARS,
        description="A catalogue model id or its vendor's id for it (that model first, then the "
                    "default route's other models; header `x-imagequeue-fallback: none` pins "
                    "it), a route name, or `auto` (the default route, also when omitted).")
    n: int | None = Field(default=None, ge=1, description="Number of images (1 when omitted).")
    size: str | None = Field(
        default=None, description="`WIDTHxHEIGHT` in pixels, or `auto` (1024x1024).",
        json_schema_extra={"pattern": f"^(auto|{SIZE_PATTERN.pattern})$"})
    quality: Literal["low", "medium", "high", "auto"] | None = None
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="`b64_json` (the default): the image in the answer; `url`: a "
                                  "signed link to it that expires.")
    user: str | None = Field(default=None, max_length=MAX_USER_CHARS,
                             description="Your end user's id, kept in the job's metadata.")
    safety_identifier: str | None = Field(default=None, max_length=MAX_USER_CHARS,
                                          description="As `user` (it wins when both are given).")
    background: Literal["auto"] | None = Field(default=None, description="`auto` only.")
    moderation: Literal["auto"] | None = Field(default=None, description="`auto` only.")
    stream: Literal[False] | None = Field(default=None, description="Streaming is not "
                                                                    "supported: `false` only.")


class GeneratedImage(BaseModel):
    b64_json: str | None = Field(default=None, description="The image, base64-encoded.")
    url: str | None = Field(
        default=None, description="A link to the image, signed and expiring; it also opens "
                                  "with the tenant's API key without its query string.")
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    """The answer of ``POST /v1/images/generations``; headers ``x-imagequeue-job-id``,
    ``x-imagequeue-served-by`` and ``x-imagequeue-degraded`` say who made the images."""

    created: int = Field(description="Unix time the job was accepted.")
    data: list[GeneratedImage]
    size: str | None = None
    quality: str | None = None
    output_format: str | None = Field(default=None, description="png, jpeg, webp or svg.")


class ModelEntry(BaseModel):
    """One model or route of the catalogue, as an OpenAI model object with imagequeue's fields."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time of the catalogue file the API loaded.")
    owned_by: str = Field(description="The vendor; `imagequeue` for a route.")
    kind: Literal["model", "route"]
    vendor_model: str | None = Field(default=None, description="A model's id at its vendor "
                                                               "(also accepted as `model`).")
    capabilities: list[str] = Field(description="A route's are those of its first model.")
    price_per_image_usd: float = Field(description="List price; a route's is its first "
                                                   "model's (what a job reserves).")
    sizes: list[str] | None = Field(default=None,
                                    description="Sizes a model offers; empty = any in its bounds.")
    max_images_per_call: int | None = None
    configured: bool | None = Field(default=None,
                                    description="A model: its API key is set (or none needed).")
    models: list[str] | None = Field(default=None, description="A route's models, in the order "
                                                               "they are tried.")
    allow_fallback: bool | None = None
    serving_model: str | None = Field(
        default=None, description="A route: the first of its models its breaker lets serve now.")
    breaker_state: str | None = Field(
        description="A model's breaker state; a route's first model's. Null while Redis is "
                    "unreachable.")
    health: str | None = Field(
        description="green, yellow or red. A route: green when its first model serves, yellow "
                    "when only a fallback does (degraded), red when none does.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelEntry]


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError
