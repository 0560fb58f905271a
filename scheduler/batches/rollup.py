"""A batch's progress in one GROUP BY, and its completion: the moment its last job ends.

Completion is detected in the transaction that ends a job (the worker's last write, via
``job_ended``; a batch cancel): it adds the job to the batch's ``ended_jobs``, and the one that
brings that count to the total completes the batch then and there. The batch row's lock orders
those transactions, so exactly one sees the count reach the total. A sweep in the scheduler and
each read of an open batch check with one index seek on (batch_id, status) as a safety net (a
job canceled on its own is counted after its cancel). Exactly one caller wins the conditional
update that marks the batch done, and that caller queues the ``batch.completed`` webhook in the
same transaction.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Table, bindparam, case, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from scheduler.notices import ALL_MODELS_UNAVAILABLE, batch_notice, notice_of
from scheduler.outages import DEPENDENCY_ERRORS, OutageLog, RepeatedErrors
from scheduler.webhooks import outbox
from storage.models import (
    OPEN_BATCH_STATUSES,
    UNFINISHED_STATUSES,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    utcnow,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0  # includes jobs whose deadline passed while they waited
    canceled: int = 0

    @property
    def unfinished(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class BatchProgress:
    counts: RequestCounts
    served_by: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    cost_usd: float = 0.0
    unavailable: int = 0  # failed because no model served them before their deadline

    @property
    def notice(self) -> str | None:
        """The batch's summary for end users (``scheduler.notices.batch_notice``)."""
        return batch_notice(total=self.counts.total, degraded=self.degraded,
                            unavailable=self.unavailable)


def progress(session: Session, batch_id: str) -> BatchProgress:
    """Counts by status, jobs served per model, degraded and unavailable counts and cost: one
    GROUP BY."""
    unavailable_ = Job.error_type == ALL_MODELS_UNAVAILABLE
    rows = session.execute(
        select(Job.status, Job.served_by, Job.degraded, func.count(), func.sum(Job.cost_usd),
               func.sum(case((unavailable_, 1), else_=0)))
        .where(Job.batch_id == batch_id)
        .group_by(Job.status, Job.served_by, Job.degraded)).all()
    by_status: Counter[str] = Counter()
    served: Counter[str] = Counter()
    degraded, cost_usd, unavailable = 0, 0.0, 0
    for status, served_by, is_degraded, count, cost, no_model in rows:
        by_status[status] += count
        if served_by:
            served[served_by] += count
        if is_degraded:
            degraded += count
        cost_usd += float(cost or 0.0)
        unavailable += int(no_model or 0)
    counts = RequestCounts(total=sum(by_status.values()),
                           **{status.value: by_status[status] for status in JobStatus})
    return BatchProgress(counts, dict(served), degraded, round(cost_usd, 6), unavailable)


def has_unfinished_jobs(session: Session, batch_id: str) -> bool:
    return session.scalar(select(Job.id).where(Job.batch_id == batch_id,
                                               Job.status.in_(UNFINISHED_STATUSES)).limit(1)) is not None


def final_status(stored: str, counts: RequestCounts) -> BatchStatus:
    if stored == BatchStatus.CANCELING:
        return BatchStatus.CANCELED
    return (BatchStatus.FAILED if counts.total and counts.succeeded == 0
            else BatchStatus.COMPLETED)


def finalize_if_done(sessions: sessionmaker[Session], batch_id: str, public_base_url: str) -> bool:
    """Mark the batch finished if no job is queued or running; True if this call did it."""
    with sessions.begin() as session:
        return _finalize(session, batch_id, public_base_url)


def _finalize(session: Session, batch_id: str, public_base_url: str) -> bool:
    """``finalize_if_done`` in the caller's transaction."""
    batch = session.get(Batch, batch_id)
    if batch is None or batch.status not in OPEN_BATCH_STATUSES:
        return False
    if has_unfinished_jobs(session, batch_id):
        return False
    state = progress(session, batch_id)
    status = final_status(batch.status, state.counts)
    won = session.execute(
        update(Batch).where(Batch.id == batch_id, Batch.status == batch.status)
        .values(status=status.value, completed_at=utcnow())
    ).rowcount  # type: ignore[attr-defined]
    if won and batch.webhook_url:
        outbox.enqueue(session, tenant_id=batch.tenant_id, event_type=f"batch.{status}",
                       subject_id=batch_id, url=batch.webhook_url,
                       data=batch_event_data(batch, status, state, public_base_url))
    return bool(won)


# Built once with bind parameters: compiled once per process, not once per ended job.
BATCHES: Table = Batch.__table__  # type: ignore[assignment]
COUNT_ENDED = (update(BATCHES).where(BATCHES.c.id == bindparam("batch_id"))
               .values(ended_jobs=BATCHES.c.ended_jobs + bindparam("jobs", type_=Integer))
               .returning(BATCHES.c.ended_jobs, BATCHES.c.total, BATCHES.c.status))


def count_ended(session: Session, batch_id: str, jobs: int, public_base_url: str) -> bool:
    """In the transaction that ended ``jobs`` of the batch: add them to its ``ended_jobs`` and,
    if that was the last of them, complete it; True if this call did. Put it last in the
    transaction: the batch row stays locked until the commit."""
    row = session.execute(COUNT_ENDED, {"batch_id": batch_id, "jobs": jobs}).one_or_none()
    if row is None or row.ended_jobs < row.total or row.status not in OPEN_BATCH_STATUSES:
        return False
    return _finalize(session, batch_id, public_base_url)


def batch_event_data(batch: Batch, status: str, state: BatchProgress,
                     public_base_url: str) -> dict[str, Any]:
    c = state.counts
    return {"id": batch.id, "object": "batch", "status": status,
            "request_counts": {"total": c.total, "succeeded": c.succeeded, "failed": c.failed,
                               "canceled": c.canceled},
            "served_by": state.served_by, "degraded": state.degraded, "notice": state.notice,
            "cost_usd": state.cost_usd,
            "results_url": f"{public_base_url}/v1/batches/{batch.id}/results",
            # The batch's own metadata; each line's is on its job and in the results.
            "metadata": batch.metadata_ or {}}


def job_ended(session: Session, job_id: str, batch_id: str | None, public_base_url: str, *,
              webhook: bool, name: Callable[[str], str] = str) -> None:
    """In the transaction whose conditional update ended job ``job_id`` (there is one per job,
    however often it was delivered): queue its own webhook if it has one (``webhook``), and
    count it on its batch (which that may complete). ``name`` gives a model's name for end
    users in the webhook's notice (``Catalogue.shown_name``); the notice reads the job and its
    attempts in this transaction. A webhook that cannot be built is logged, and the job ends all
    the same."""
    if webhook:
        try:
            job = session.get(Job, job_id)
            assert job is not None and job.webhook_url is not None
            data = job_event_data(job, public_base_url, name)
        except SQLAlchemyError:
            raise  # the transaction is lost: the caller's retry runs it again
        except Exception:  # noqa: BLE001 - a webhook never stops the job's end
            log.exception("job %s ended; its webhook could not be built", job_id)
        else:
            outbox.enqueue(session, tenant_id=job.tenant_id, event_type=f"job.{job.status}",
                           subject_id=job.id, url=job.webhook_url, data=data)
    if batch_id is not None:
        count_ended(session, batch_id, 1, public_base_url)


def job_event_data(job: Job, public_base_url: str,
                   name: Callable[[str], str] = str) -> dict[str, Any]:
    error = ({"type": job.error_type, "message": job.error_message}
             if job.error_type else None)
    return {"id": job.id, "object": "job", "status": job.status, "custom_id": job.custom_id,
            "served_by": job.served_by, "degraded": job.degraded,
            "notice": notice_of(job, name), "cost_usd": job.cost_usd,
            "images": [f"{public_base_url}/v1/jobs/{job.id}/images/{k}"
                       for k in range(len(job.images or []))],
            "error": error, "metadata": job.metadata_ or {}}


def sweep_open_batches(sessions: sessionmaker[Session], public_base_url: str,
                       limit: int = 200) -> int:
    """Complete open batches whose last job ended without the hook running (crash, expiry)."""
    with sessions() as session:
        open_ids = list(session.scalars(select(Batch.id).where(Batch.status.in_(OPEN_BATCH_STATUSES))
                                        .order_by(Batch.created_at).limit(limit)))
    return sum(finalize_if_done(sessions, batch_id, public_base_url) for batch_id in open_ids)


def periodic_sweep(sessions: sessionmaker[Session], public_base_url: str,
                   every_s: float = 10.0) -> Callable[[], None]:
    """``sweep_open_batches`` at most every ``every_s``, for a loop to call on each pass. It never
    raises: a database outage is logged when it starts and when it ends (the sweep tried again
    every ``every_s`` meanwhile), any other failure once a minute at most."""
    last_sweep_s: float | None = None
    outages = OutageLog("open-batch sweep", log, backoff_s=every_s)
    errors = RepeatedErrors("open-batch sweep", log)

    def sweep() -> None:
        nonlocal last_sweep_s
        if last_sweep_s is not None and time.monotonic() - last_sweep_s < every_s:
            return
        last_sweep_s = time.monotonic()
        try:
            sweep_open_batches(sessions, public_base_url)
        except DEPENDENCY_ERRORS as exc:
            outages.failed(exc)
        except Exception as exc:  # noqa: BLE001 - the next sweep may do better
            errors.error(exc)
        else:
            outages.succeeded(("database",))

    return sweep

