"""Parking: a job whose every candidate is denied or failing waits, out of the queue, and comes
back when the earliest denied model may be allowed again.

Not a Celery countdown retry: on the Redis transport those sit in a worker's memory and are
redelivered after the visibility timeout. The job returns to the waiting index's parked set (it
keeps its original place) and to ``queued`` in the database with ``not_before`` set, so the
dispatcher does not hand it out before then, and a reconcile after a Redis flush cannot lose it: a
worker handed a job whose ``not_before`` lies ahead parks it again without calling anyone.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.models import Job, JobStatus
from workers.journal import totals
from workers.router import RouteOutcome

MIN_PARK_MS = 100


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_epoch_ms(epoch_ms_: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms_ / 1000, UTC)


def not_before_ms(outcome: RouteOutcome, retry_at_ms: int | None, limited: bool, now_ms: int,
                  backoff_s: float, deadline_ms: int) -> int:
    """When a job that found no model should walk again.

    The earliest known end of a denial (open period, quota cooldown, probe round); a short
    backoff when a model failed or was only busy (it may answer sooner) or when no denial has a
    known end (forced open, misconfigured); never past the deadline, never in a tight loop.
    """
    times = [retry_at_ms] if retry_at_ms is not None else []
    if outcome.last_failure is not None or limited or not times:
        times.append(now_ms + int(backoff_s * 1000))
    return max(now_ms + MIN_PARK_MS, min(min(times), deadline_ms))


def park_in_database(session: Session, job_id: str, not_before_ms_: int) -> bool:
    """Back to ``queued`` with ``not_before``; False if the job was no longer running."""
    changed = session.execute(  # type: ignore[attr-defined]
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING.value)
        .values(status=JobStatus.QUEUED.value, not_before=from_epoch_ms(not_before_ms_),
                **totals())
    ).rowcount
    return bool(changed)
