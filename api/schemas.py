"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.jsonl import parse_size


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(description="What to draw.", examples=["A red fox in snow, watercolor"])
    size: str = Field(default="1024x1024", description="WIDTHxHEIGHT in pixels.")
    n: int = Field(default=1, ge=1, description="Number of images.")
    quality: Literal["low", "medium", "high", "auto"] | None = None
    model: str | None = Field(default=None, description="Pin one model (no fallback).")
    route: str | None = Field(default=None, description="A named route; `default` when omitted.")
    priority: int = Field(default=0, ge=-10, le=10, description="Higher runs earlier in its lane.")
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=32)
    webhook_url: str | None = Field(default=None, description="POSTed (signed) when the job ends.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("prompt must not be empty")
        return value

    @field_validator("size")
    @classmethod
    def _size_valid(cls, value: str) -> str:
        parse_size(value)
        return value

    @model_validator(mode="after")
    def _model_or_route(self) -> JobCreate:
        if self.model is not None and self.route is not None:
            raise ValueError("give either model (pinned) or route, not both")
        return self


class ErrorBody(BaseModel):
    type: str
    message: str
    vendor_status: int | None = None


class ImageOut(BaseModel):
    index: int
    url: str
    content_type: str
    width: int
    height: int


class AttemptOut(BaseModel):
    model: str
    started_at: datetime
    latency_ms: int | None
    outcome: str
    http_status: int | None
    vendor_request_id: str | None
    cost_usd: float
    message: str | None


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: str
    prompt: str
    size: str
    n: int
    route: str
    requested_model: str | None
    served_by: str | None
    degraded: bool
    queue_position: int | None = Field(
        description="0 = next to be handed to a worker; null once handed to one (or parked).")
    eta_start_seconds: float | None = Field(
        default=None,
        description="Expected seconds until the job starts (0 once handed to a worker).")
    eta_finish_seconds: float | None = Field(
        default=None, description="Expected seconds until the job's image is ready.")
    current_model: str | None = Field(default=None, description="The model being tried now.")
    expected_remaining_seconds: float | None = Field(
        default=None, description="While running: expected seconds left on the current model.")
    priority: int
    lane: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cost_usd: float
    error: ErrorBody | None
    images: list[ImageOut]
    attempts: list[AttemptOut]
    metadata: dict[str, Any]


class ApiErrorDetail(BaseModel):
    field: str | None
    message: str


class ApiError(BaseModel):
    type: str
    message: str
    details: list[ApiErrorDetail] = []


class ApiErrorResponse(BaseModel):
    error: ApiError
