"""Every billed call on the record: an attempt row is written before each vendor call.

The row starts as ``in_progress`` with the model's price (the call may be billed from the moment
it is sent) and is completed in the job's final write. An asynchronous vendor's task is saved the
moment the vendor returns it, so a reclaimed job resumes polling it instead of submitting again.
A run that starts finds the rows an earlier, dead run left ``in_progress``: a synchronous call
becomes ``lost`` (possibly billed, its price kept in the job's cost); a task is resumed.

The transaction that starts a run (``OpenClaim``) stays open until the first call's row joins it:
marking the job running and putting its first call on record cost one commit, not two, and the
row is still written after the breaker and the vendor limits said yes, right before the call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from providers.catalogue import ModelSpec
from providers.types import TaskHooks, VendorTask
from scheduler.outages import DATABASE_ERRORS
from storage.models import Attempt, AttemptOutcome, Job
from workers.router import SKIPPED, AttemptHooks, AttemptRecord

log = logging.getLogger(__name__)

LOST_MESSAGE = ("the worker running this call stopped before it ended; the vendor may have "
                "billed it")


class DatabaseUnreachable(Exception):
    """The database cannot be reached: the job goes back to its place, nothing is called."""


@dataclass(frozen=True)
class PendingTask:
    """A vendor task an earlier run submitted and did not see to the end."""

    row_id: int
    model: str
    task: VendorTask


class OpenClaim:
    """The run's first transaction (the job marked running), left open for the first call's row.

    It commits with that row (``commit_with``), or alone (``commit``) when the run calls no one,
    and early (``commit_early``) before anything that may wait (a vendor slot), so that no row or
    database lock is held across a wait. Once a commit failed, nothing of it was written: every
    later ``commit`` raises ``DatabaseUnreachable`` and the job goes back untouched.
    """

    def __init__(self, session: Session) -> None:
        self._session: Session | None = session
        self._failure: str | None = None

    def commit_with(self, row: dict[str, object]) -> int | None:
        """Commit with the attempt ``row`` added (``OPEN_ATTEMPT``'s values); its id, or None if
        the claim was committed already (the row needs a transaction of its own)."""
        if self._failure is None and self._session is None:
            return None
        self._raise_if_failed()
        session = self._session
        assert session is not None
        try:
            row_id = add_open_attempt(session, row)
        except DATABASE_ERRORS as exc:
            self._fail(exc)
        self.commit()
        return row_id

    def commit(self) -> None:
        """Commit what is open (once); DatabaseUnreachable if this or an earlier commit failed."""
        self._raise_if_failed()
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.commit()
        except DATABASE_ERRORS as exc:
            self._fail(exc)
        finally:
            session.close()

    def commit_early(self) -> None:
        """Before a wait: commit now; a failure is raised by the next ``commit``."""
        with suppress(DatabaseUnreachable):
            self.commit()

    def close(self) -> None:
        """Roll back whatever was not committed (the run stopped early): the job stays as it was."""
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _fail(self, exc: BaseException) -> NoReturn:
        self._failure = str(exc)
        self.close()
        raise DatabaseUnreachable(self._failure) from exc

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise DatabaseUnreachable(self._failure)


class AttemptJournal(AttemptHooks):
    """Writes the ``in_progress`` row of each call right before it is made (the last hook, after
    the breaker and the vendor limits have said yes): in the run's claim while it is open, else in
    a transaction of its own."""

    def __init__(self, sessions: sessionmaker[Session], job_id: str, images: int,
                 worker: str | None = None, claim: OpenClaim | None = None) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.images = images
        self.worker = worker  # host:pid, on each row: which process made the call
        self.claim = claim
        self.row_ids: list[int] = []  # in call order, as the walk's non-skipped attempts
        self._current: dict[str, int] = {}

    def before(self, index: int, model: ModelSpec) -> str | None:
        row: dict[str, object] = {
            "job_id": self.job_id, "model": model.id, "started_at": datetime.now(UTC),
            "cost_usd": model.price_per_image_usd * self.images, "worker": self.worker}
        row_id = self.claim.commit_with(row) if self.claim is not None else None
        if row_id is None:
            try:
                with self.sessions.begin() as session:
                    row_id = add_open_attempt(session, row)
            except DATABASE_ERRORS as exc:
                raise DatabaseUnreachable(str(exc)) from exc
        self.row_ids.append(row_id)
        self._current[model.id] = row_id
        return None

    def task_hooks(self, model: ModelSpec) -> TaskHooks:
        return TaskHooks(submitted=lambda task: self._save_task(model.id, task))

    def _save_task(self, model: str, task: VendorTask) -> None:
        row_id = self._current.get(model)
        if row_id is None:
            return
        try:
            with self.sessions.begin() as session:
                session.execute(update(Attempt).where(Attempt.id == row_id).values(
                    vendor_task_id=task.task_id, vendor_task_url=task.polling_url,
                    vendor_request_id=task.task_id))
        except DATABASE_ERRORS as exc:  # the call goes on; only a crash now would re-submit
            log.warning("job %s: cannot save the %s task %s (%s)", self.job_id, model,
                        task.task_id, exc)


def start_run(session: Session, job_id: str) -> PendingTask | None:
    """At the start of a run: calls a dead run left open become ``lost``, except its newest
    vendor task, which is returned to be resumed."""
    rows = session.execute(select(Attempt.id, Attempt.model, Attempt.vendor_task_id,
                                  Attempt.vendor_task_url).where(
        Attempt.job_id == job_id, Attempt.outcome == AttemptOutcome.IN_PROGRESS.value,
        Attempt.vendor_task_url.is_not(None),
    ).order_by(Attempt.id.desc()).limit(1)).all()
    pending = (PendingTask(rows[0].id, rows[0].model,
                           VendorTask(rows[0].vendor_task_id, str(rows[0].vendor_task_url)))
               if rows else None)
    session.execute(update(Attempt).where(
        Attempt.job_id == job_id, Attempt.outcome == AttemptOutcome.IN_PROGRESS.value,
        Attempt.id != (pending.row_id if pending else -1),
    ).values(outcome=AttemptOutcome.LOST.value, message=LOST_MESSAGE))
    return pending


ATTEMPTS: Table = Attempt.__table__  # type: ignore[assignment]
RECORD_FIELDS = ("model", "started_at", "latency_ms", "outcome", "http_status",
                 "vendor_request_id", "cost_usd", "message")
# Built once, with bind parameters: SQLAlchemy then compiles them (and computes their cache keys)
# once per process instead of once per job, which was a tenth of a worker's CPU.
COMPLETE_ATTEMPT = update(ATTEMPTS).where(ATTEMPTS.c.id == bindparam("row_id")).values(
    {name: bindparam(f"v_{name}", type_=ATTEMPTS.c[name].type) for name in RECORD_FIELDS})
OPEN_FIELDS = ("job_id", "model", "started_at", "cost_usd", "worker")
OPEN_ATTEMPT = insert(ATTEMPTS).values(
    {**{name: bindparam(name, type_=ATTEMPTS.c[name].type) for name in OPEN_FIELDS},
     "outcome": AttemptOutcome.IN_PROGRESS.value}).returning(ATTEMPTS.c.id)
ADD_ATTEMPT = insert(ATTEMPTS).values(
    {name: bindparam(f"v_{name}", type_=ATTEMPTS.c[name].type)
     for name in ("job_id", *RECORD_FIELDS)})


def add_open_attempt(session: Session, row: dict[str, object]) -> int:
    """Put a call on record before it is made (``OPEN_FIELDS``): its row's id."""
    return int(session.execute(OPEN_ATTEMPT, row).scalar_one())


def write_attempts(session: Session, job_id: str, attempts: list[AttemptRecord],
                   row_ids: list[int]) -> None:
    """Complete the rows of the calls made (in order) and add the skipped models' rows."""
    calls: Iterator[int] = iter(row_ids)
    completed, added = [], []
    for a in attempts:
        values = {"v_model": a.model,
                  "v_started_at": datetime.fromtimestamp(a.started_at_s, UTC),
                  "v_latency_ms": a.latency_ms, "v_outcome": a.outcome,
                  "v_http_status": a.http_status, "v_vendor_request_id": a.request_id,
                  "v_cost_usd": a.cost_usd, "v_message": a.message}
        row_id = None if a.outcome == SKIPPED else next(calls, None)
        if row_id is None:
            added.append({"v_job_id": job_id, **values})
        else:
            completed.append({"row_id": row_id, **values})
    if completed:
        session.execute(COMPLETE_ATTEMPT, completed)
    if added:
        session.execute(ADD_ATTEMPT, added)


def totals() -> dict[str, object]:
    """The job's attempt count and cost, from its attempt rows (lost calls included)."""
    count = select(func.count(Attempt.id)).where(Attempt.job_id == Job.id).scalar_subquery()
    cost = (select(func.coalesce(func.sum(Attempt.cost_usd), 0.0))
            .where(Attempt.job_id == Job.id).scalar_subquery())
    return {"attempts_count": count, "cost_usd": cost}
