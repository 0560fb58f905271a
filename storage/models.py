"""SQLAlchemy 2 models: tenants, batches, jobs and provider attempts.

The database is the source of truth; Redis holds only indexes that can be rebuilt from it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class JobStatus(StrEnum):
    """A job's status: `succeeded`, `failed` and `canceled` are final. A job that no model has
    served by its deadline ends `failed`."""

    # Stored in ``jobs.status``; the same values are the API's.

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED})
"""The statuses a job never leaves. Members are ``str``: ``"failed" in TERMINAL_STATUSES`` holds,
and the set binds as is in SQL (``Job.status.in_(TERMINAL_STATUSES)``)."""
UNFINISHED_STATUSES: frozenset[JobStatus] = frozenset(JobStatus) - TERMINAL_STATUSES


class BatchStatus(StrEnum):
    """A batch's status: `in_progress`, or `canceling` after a cancel until its running jobs
    end; once its last job ends, `canceled` if it was canceled, `failed` if none of its jobs
    succeeded, else `completed`."""

    # Stored in ``batches.status``; the same values are the API's. The transitions are
    # scheduler/batches/rollup.py's.

    IN_PROGRESS = "in_progress"
    CANCELING = "canceling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_BATCH_STATUSES


FINISHED_BATCH_STATUSES: frozenset[BatchStatus] = frozenset(
    {BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELED})
"""The statuses a batch never leaves (its stream and ``imgq watch`` end there)."""
OPEN_BATCH_STATUSES: frozenset[BatchStatus] = frozenset(BatchStatus) - FINISHED_BATCH_STATUSES


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    api_key_prefix: Mapped[str] = mapped_column(String(16))
    webhook_secret: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Limits (scheduler/tenants/quotas.py): NULL = the IMGQ_TENANT_* default; 0 = no limit.
    rpm: Mapped[int | None] = mapped_column(Integer)
    max_queued: Mapped[int | None] = mapped_column(Integer)
    max_running: Mapped[int | None] = mapped_column(Integer)
    budget_usd: Mapped[float | None] = mapped_column(Float)
    budget_period: Mapped[str | None] = mapped_column(String(10))  # "day" or "month"


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("batch"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default=BatchStatus.IN_PROGRESS.value)
    total: Mapped[int] = mapped_column(Integer, default=0)
    # Its jobs that have ended, added to in the transaction that ends each (a worker's last
    # write, a cancel): the one that brings it to ``total`` completes the batch then and there.
    ended_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    route: Mapped[str | None] = mapped_column(String(64))
    webhook_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        Index("ix_batches_tenant_idem", "tenant_id", "idempotency_key", unique=True),
    )


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    batch_index: Mapped[int | None] = mapped_column(Integer)
    custom_id: Mapped[str | None] = mapped_column(String(200))

    prompt: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    n: Mapped[int] = mapped_column(Integer, default=1)
    quality: Mapped[str | None] = mapped_column(String(20))
    route: Mapped[str] = mapped_column(String(64))
    requested_model: Mapped[str | None] = mapped_column(String(100))
    lane: Mapped[str] = mapped_column(String(20), default="interactive")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    webhook_url: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED.value)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()
    deadline_at: Mapped[datetime | None] = mapped_column()
    not_before: Mapped[datetime | None] = mapped_column()
    attempts_count: Mapped[int] = mapped_column(Integer, default=0)

    served_by: Mapped[str | None] = mapped_column(String(100))
    degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # Reserved from the tenant's budget at submit (price of the route's first model x n).
    estimated_cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    error_type: Mapped[str | None] = mapped_column(String(50))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_vendor_status: Mapped[int | None] = mapped_column(Integer)
    images: Mapped[list[Any]] = mapped_column(JSON, default=list)

    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="job", order_by="(Attempt.started_at, Attempt.id)",
        cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_batch", "batch_id", "batch_index"),
        Index("ix_jobs_tenant_idem", "tenant_id", "idempotency_key", unique=True),
    )


class AttemptOutcome(StrEnum):
    """Outcomes besides "success" and the error classes (``providers.errors.ErrorClass``)."""

    SKIPPED = "skipped"          # never called: the breaker, a vendor limit or the model's limits
    IN_PROGRESS = "in_progress"  # written before the call; completed after it
    LOST = "lost"                # the worker died during the call: it may have been billed


class Attempt(Base):
    """One call to a vendor (or a model skipped without a call), on record before the call."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    model: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(30))  # "success", an error class, AttemptOutcome
    http_status: Mapped[int | None] = mapped_column(Integer)
    vendor_request_id: Mapped[str | None] = mapped_column(String(200))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    vendor_task_id: Mapped[str | None] = mapped_column(String(200))
    vendor_task_url: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid of the process that called

    job: Mapped[Job] = relationship(back_populates="attempts")

    __table_args__ = (Index("ix_attempts_job_outcome", "job_id", "outcome"),)


# Finding whether a batch still has unfinished jobs is one index seek, not a scan of the batch.
Index("ix_jobs_batch_status", Job.batch_id, Job.status)
# A tenant's spend in a period is recounted from its jobs created since the period began.
Index("ix_jobs_tenant_created", Job.tenant_id, Job.created_at)
# Any status lookup, and reconcile's read of the queued jobs in arrival order, chunk by chunk.
Index("ix_jobs_status_created", Job.status, Job.created_at, Job.id)


class WebhookDelivery(Base):
    """One event to POST to a webhook URL; retried until it succeeds or the schedule runs out."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("msg"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(40), index=True)
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    last_response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column()

    attempts: Mapped[list[WebhookAttempt]] = relationship(
        back_populates="delivery", order_by="WebhookAttempt.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    response_status: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)

    delivery: Mapped[WebhookDelivery] = relationship(back_populates="attempts")
