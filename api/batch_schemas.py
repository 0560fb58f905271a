"""Response bodies of /v1/batches and /v1/webhooks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from storage.models import BatchStatus


class RequestCountsOut(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    canceled: int


class WebhookAttemptOut(BaseModel):
    attempted_at: datetime
    response_status: int | None
    latency_ms: int | None
    error: str | None


class WebhookDeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header of every attempt of this delivery.")
    event_type: str
    subject_id: str
    url: str
    status: Literal["pending", "succeeded", "failed"]
    attempts_count: int
    next_attempt_at: datetime | None
    last_response_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    attempts: list[WebhookAttemptOut] = []


class RejectedLineOut(BaseModel):
    line: int
    custom_id: str | None
    field: str | None
    message: str


class BatchOut(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None
    request_counts: RequestCountsOut
    served_by: dict[str, int] = Field(description="Jobs served by each model.")
    degraded: int = Field(description="Jobs served by a fallback model, not the one requested.")
    notice: str | None = Field(
        default=None,
        description="One plain sentence for the end user: how many images a fallback model "
                    "made and how many no model could make in time (each result line's "
                    "`notice` says why); null when neither happened.",
        examples=["12 of 200 images were made with a fallback model; each result's notice "
                  "says why."])
    cost_usd: float = Field(description="Cost of the jobs finished so far.")
    eta_last_job_s: float | None = Field(
        default=None, description="Seconds until the last job should finish; null when unknown.")
    route: str | None
    webhook_url: str | None
    webhook: WebhookDeliveryOut | None = Field(
        default=None, description="The completion webhook's delivery, once queued.")
    metadata: dict[str, Any]
    results_url: str
    results_zip_url: str
    rejected: list[RejectedLineOut] = Field(
        default=[], description="On create with allow_partial=true: the lines not queued.")
    rejected_count: int = 0


class BatchListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchOut]
    has_more: bool
    first_id: str | None
    last_id: str | None


class DeliveryListOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookDeliveryOut]


class WebhookSecretOut(BaseModel):
    secret: str = Field(description="`whsec_<base64>`: HMAC-SHA256 key for `webhook-signature`.")
