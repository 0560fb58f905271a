"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

# The one definition of a valid job (and so the OpenAPI schema of POST /v1/jobs' body).
from scheduler.job_spec import JobCreate as JobCreate
from storage.models import JobStatus


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
    worker: str | None = Field(
        default=None, description="The worker process that made the call, as host:pid.")


class JobOut(BaseModel):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    prompt: str
    size: str
    n: int
    route: str
    requested_model: str | None
    served_by: str | None
    degraded: bool
    notice: str | None = Field(
        default=None,
        description="One plain sentence for the end user when the job was not served as asked "
                    "(a fallback model made it, or no model could), naming the models and why; "
                    "null when nothing was degraded, while it runs, and when the request itself "
                    "was refused (its `error` says why). Meant to be shown as is, e.g. as a toast.",
        examples=["Made with Seedream 4.5 because Gemini 3 Pro Image is overloaded right now."])
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
    waiting_for: str | None = Field(
        default=None,
        description="While running: why the job waits before calling its current model, in "
                    "words; null while it does not wait.",
        examples=["waiting for first results from Seedream 4.5"])
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
    request_id: str | None = Field(
        default=None, description="On a 500: the id the server logged it under (also the "
                                  "`X-Request-Id` header of every response).")


class ApiErrorResponse(BaseModel):
    error: ApiError
