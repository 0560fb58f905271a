"""Batches: submit a JSONL upload as thousands of jobs at once, follow them, cancel, page results.

Submit never sends a Celery task per job: rows go in with executemany in chunks, in one
transaction, then the job ids go to the waiting index in chunks (lane ``bulk``), read back from
the database page by page, so memory does not grow with the batch. The dispatcher hands them to
workers as slots free up. With ``allow_partial`` the good lines are queued and the bad ones
returned; otherwise one bad line means nothing is queued. Once the rows are committed the submit
has succeeded: if Redis (or the database, for the id pages) fails during the indexing, the jobs
wait for ``scheduler.queue.reconcile`` to index them, and the batch is still accepted.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, Any

import redis
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imagequeue import metrics
from scheduler.batches import rollup
from scheduler.batches.jsonl import BatchLimits, JobLine, LineError, numbered_lines, parse_line
from scheduler.errors import InvalidJob, NotFound, QueueError
from scheduler.idempotency import find_previous
from scheduler.ids import possible_id, shown_id
from scheduler.notices import ALL_MODELS_UNAVAILABLE, Tried, job_notice
from scheduler.outages import DATABASE_ERRORS
from scheduler.queue.index import IndexEntry
from scheduler.queue.jobs import JobQueue, JobRequest
from scheduler.tenants.quotas import Reservation
from storage.models import (
    OPEN_BATCH_STATUSES,
    Attempt,
    Batch,
    BatchStatus,
    Job,
    JobStatus,
    WebhookDelivery,
    new_id,
    utcnow,
)

BULK_LANE = "bulk"
MAX_REPORTED_ERRORS = 1000
log = logging.getLogger("scheduler.batches.service")
INDEX_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, *DATABASE_ERRORS)


class InvalidBatch(QueueError):
    """Lines failed validation; ``errors`` holds up to MAX_REPORTED_ERRORS of them."""

    def __init__(self, message: str, errors: list[LineError], bad_lines: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.bad_lines = bad_lines


@dataclass(frozen=True)
class BatchOptions:
    allow_partial: bool = False
    route: str | None = None
    model: str | None = None
    webhook_url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Submitted:
    batch: Batch
    created: bool  # False when an idempotent retry returned the original batch
    rejected: list[LineError]
    rejected_count: int = 0


@dataclass(frozen=True)
class Checked:
    line: JobLine
    route: str
    requested_model: str


@dataclass(frozen=True)
class BatchView:
    batch: Batch
    progress: rollup.BatchProgress
    webhook: WebhookDelivery | None
    eta_s: float | None = None  # seconds until the batch's last job is expected to finish


@dataclass(frozen=True)
class ResultRow:
    job_id: str
    line: int
    custom_id: str | None
    status: str
    served_by: str | None
    degraded: bool
    images: list[dict[str, Any]]
    error_type: str | None
    error_message: str | None
    cost_usd: float
    metadata: dict[str, Any] = field(default_factory=dict)
    notice: str | None = None  # scheduler.notices.job_notice


class Batches:
    def __init__(self, sessions: sessionmaker[Session], queue: JobQueue, limits: BatchLimits, *,
                 public_base_url: str, job_deadline_s: float = 86_400.0,
                 chunk_rows: int = 2000) -> None:
        self.sessions = sessions
        self.queue = queue
        self.limits = limits
        self.public_base_url = public_base_url
        self.job_deadline_s = job_deadline_s
        self.chunk_rows = chunk_rows
        self._routes: dict[tuple[str | None, str | None], tuple[str, str]] = {}
        self._servable: dict[tuple[Any, ...], InvalidJob | None] = {}

    # --- submit -----------------------------------------------------------------------------

    def submit(self, tenant_id: str, source: IO[bytes], options: BatchOptions, *,
               idempotency_key: str | None = None, request_hash: str | None = None) -> Submitted:
        if idempotency_key is not None:
            with self.sessions() as session:
                previous = find_previous(session, Batch, tenant_id, idempotency_key,
                                         request_hash or "")
            if previous is not None:
                return Submitted(previous, False, [])
        try:
            submitted = self._write_counted(tenant_id, source, options, idempotency_key,
                                            request_hash)
        except IntegrityError:
            if idempotency_key is None:
                raise
            with self.sessions() as session:  # a concurrent identical submit won the race
                previous = find_previous(session, Batch, tenant_id, idempotency_key,
                                         request_hash or "")
            if previous is None:
                raise
            return Submitted(previous, False, [])
        metrics.JOBS_SUBMITTED.labels(lane=BULK_LANE).inc(submitted.batch.total)
        try:
            self._index(submitted.batch)
        except INDEX_ERRORS as exc:  # committed: reconcile indexes them
            log.warning("batch %s is stored but its jobs are not all in the waiting index yet "
                        "(%s: %s); reconcile will index them", submitted.batch.id,
                        type(exc).__name__, exc)
        return submitted

    def _write_counted(self, tenant_id: str, source: IO[bytes], options: BatchOptions,
                       idempotency_key: str | None, request_hash: str | None) -> Submitted:
        """``_write``, giving back what the tenant's limits counted if it is not committed."""
        held: list[Reservation] = []
        try:
            return self._write(tenant_id, source, options, idempotency_key, request_hash, held)
        except BaseException:
            for reservation in held:
                self.queue.release(reservation)
            raise

    def _write(self, tenant_id: str, source: IO[bytes], options: BatchOptions,
               idempotency_key: str | None, request_hash: str | None,
               held: list[Reservation] | None = None) -> Submitted:
        if options.model is not None and options.route is not None:
            raise InvalidJob("model", "give either model (pinned) or route, not both")
        if options.model is not None or options.route is not None:
            self._resolve(options.model, options.route)  # an unknown default fails the batch
        now = utcnow()
        batch = Batch(id=new_id("batch"), tenant_id=tenant_id, status=BatchStatus.IN_PROGRESS.value,
                      total=0, route=options.model or options.route,
                      webhook_url=options.webhook_url, idempotency_key=idempotency_key,
                      request_hash=request_hash, metadata_=dict(options.metadata),
                      created_at=now)
        rows: list[dict[str, Any]] = []
        errors: list[LineError] = []
        bad_lines = queued = 0
        estimate_usd = 0.0  # reserved from the tenant's budget
        seen: set[str] = set()
        with self.sessions.begin() as session:
            session.add(batch)
            session.flush()  # the idempotency key's unique index speaks now, not at the end
            for number, raw in numbered_lines(source, self.limits.max_lines):
                checked = self._check(number, raw, options, seen)
                if isinstance(checked, list):
                    bad_lines += 1
                    errors.extend(checked[: max(0, MAX_REPORTED_ERRORS - len(errors))])
                    continue
                if bad_lines and not options.allow_partial:
                    continue  # keep validating to report every bad line, but write nothing
                # batch_index is the input line number: results and rejects count alike.
                rows.append(self._row(batch, checked, checked.line.line, now))
                estimate_usd += rows[-1]["estimated_cost_usd"]
                queued += 1
                if len(rows) >= self.chunk_rows:
                    session.execute(insert(Job), rows)
                    rows = []
            if bad_lines and not options.allow_partial:
                raise InvalidBatch(f"{bad_lines} line(s) are invalid; nothing was queued "
                                   f"(fix them, or submit with allow_partial=true to queue "
                                   f"the valid lines)", errors, bad_lines)
            if queued == 0:
                raise InvalidBatch("the batch has no valid lines; nothing was queued",
                                   errors or [LineError(1, None, "the file is empty: send one "
                                                                 "JSON object per line")],
                                   max(bad_lines, 1))
            # The tenant's max_queued and budget: the whole batch, or nothing (a 429).
            reservation = self.queue.admit(tenant_id, queued, estimate_usd, now)
            if reservation is not None and held is not None:
                held.append(reservation)
            if rows:
                session.execute(insert(Job), rows)
            batch.total = queued
        return Submitted(batch, True, errors, bad_lines)

    def _check(self, number: int, raw: bytes, options: BatchOptions,
               seen: set[str]) -> Checked | list[LineError]:
        line = parse_line(number, raw, self.limits)
        if isinstance(line, list):
            return line
        if line.custom_id in seen:
            return [LineError(number, "custom_id", f"duplicate custom_id {line.custom_id!r}",
                              line.custom_id)]
        seen.add(line.custom_id)
        if line.model is None and line.route is None:
            model, route = options.model, options.route  # the batch-wide default
        else:
            model, route = line.model, line.route
        try:
            route_name, requested_model = self._resolve(model, route)
            self._check_servable(route_name, requested_model, line)
        except InvalidJob as exc:
            return [LineError(number, exc.field, exc.message, line.custom_id)]
        return Checked(line, route_name, requested_model)

    def _check_servable(self, route: str, requested_model: str, line: JobLine) -> None:
        key = (route, requested_model, line.width, line.height, line.n, line.quality)
        if key not in self._servable:
            try:
                self.queue.check_servable(route, requested_model, JobRequest(
                    "", width=line.width, height=line.height, n=line.n, quality=line.quality))
                self._servable[key] = None
            except InvalidJob as exc:
                self._servable[key] = exc
        if (refusal := self._servable[key]) is not None:
            raise refusal

    def _resolve(self, model: str | None, route: str | None) -> tuple[str, str]:
        key = (model, route)
        if key not in self._routes:
            self._routes[key] = self.queue.resolve_route(JobRequest("", model=model, route=route))
        return self._routes[key]

    def _row(self, batch: Batch, checked: Checked, batch_index: int,
             now: datetime) -> dict[str, Any]:
        line = checked.line
        return {
            "id": new_id("job"), "tenant_id": batch.tenant_id, "batch_id": batch.id,
            "batch_index": batch_index, "custom_id": line.custom_id, "prompt": line.prompt,
            "width": line.width, "height": line.height, "n": line.n, "quality": line.quality,
            "route": checked.route, "requested_model": checked.requested_model,
            "lane": BULK_LANE, "priority": 0, "metadata_": line.metadata,
            "status": JobStatus.QUEUED.value, "created_at": now,
            "deadline_at": now + timedelta(seconds=self.job_deadline_s), "images": [],
            "attempts_count": 0, "degraded": False, "cost_usd": 0.0,
            "estimated_cost_usd": self.queue.estimate_usd(checked.requested_model, line.n),
        }

    def _index(self, batch: Batch) -> None:
        """Push the batch's queued jobs into the waiting index, in input order, page by page."""
        for page in self._pages(batch.id, select(Job.id, Job.batch_index).where(
                Job.status == JobStatus.QUEUED.value)):
            self.queue.index.push([IndexEntry(r.id, BULK_LANE, batch.tenant_id, 0) for r in page])

    def _pages(self, batch_id: str, query: Any, page_rows: int = 5000) -> Iterator[list[Any]]:
        """Keyset pages of a query over the batch's jobs, in batch_index order."""
        last = -1
        while True:
            with self.sessions() as session:
                page = session.execute(query.where(Job.batch_id == batch_id,
                                                   Job.batch_index > last)
                                       .order_by(Job.batch_index).limit(page_rows)).all()
            if not page:
                return
            yield list(page)
            last = page[-1].batch_index

    # --- read -------------------------------------------------------------------------------

    def get(self, tenant_id: str, batch_id: str, *, redis_optional: bool = False) -> BatchView:
        """A batch and its progress; ``redis_optional`` (the answer to a submit) gives no ETA
        instead of raising while Redis is unreachable."""
        batch = self._batch(tenant_id, batch_id)
        if batch.status in OPEN_BATCH_STATUSES:
            rollup.finalize_if_done(self.sessions, batch_id, self.public_base_url)
        with self.sessions() as session:
            batch = session.get_one(Batch, batch_id)
            state = rollup.progress(session, batch_id)
            webhook = session.scalar(select(WebhookDelivery)
                                     .where(WebhookDelivery.subject_id == batch_id)
                                     .order_by(WebhookDelivery.created_at.desc()).limit(1))
            last = self._last_open_job(session, batch_id)
        eta_s = None
        if last is not None:
            try:
                eta_s = self.queue.progress(last).eta_finish_s
            except redis.RedisError:
                if not redis_optional:
                    raise
        return BatchView(batch, state, webhook, eta_s)

    @staticmethod
    def _last_open_job(session: Session, batch_id: str) -> Job | None:
        """The job that will finish last: the last one still waiting, else one still running."""
        for status in (JobStatus.QUEUED.value, JobStatus.RUNNING.value):
            job = session.scalar(select(Job).where(Job.batch_id == batch_id, Job.status == status)
                                 .order_by(Job.batch_index.desc()).limit(1))
            if job is not None:
                return job
        return None

    def list(self, tenant_id: str, limit: int = 20,
             after: str | None = None) -> tuple[list[BatchView], bool]:
        """Newest first; ``after`` is the last id of the previous page. Returns (page, has_more)."""
        with self.sessions() as session:
            query = select(Batch.id).where(Batch.tenant_id == tenant_id)
            if after is not None:
                cursor = self._batch(tenant_id, after)
                query = query.where((Batch.created_at < cursor.created_at)
                                    | ((Batch.created_at == cursor.created_at)
                                       & (Batch.id < cursor.id)))
            ids = list(session.scalars(query.order_by(Batch.created_at.desc(), Batch.id.desc())
                                       .limit(limit + 1)))
        return [self.get(tenant_id, i) for i in ids[:limit]], len(ids) > limit

    def _batch(self, tenant_id: str, batch_id: str) -> Batch:
        if not possible_id(batch_id):  # never sent to SQL (a NUL, say): unknown like any other
            raise NotFound("batch", shown_id(batch_id))
        with self.sessions() as session:
            batch = session.scalar(select(Batch).where(Batch.id == batch_id,
                                                       Batch.tenant_id == tenant_id))
        if batch is None:
            raise NotFound("batch", batch_id)
        return batch

    # --- cancel -----------------------------------------------------------------------------

    def cancel(self, tenant_id: str, batch_id: str) -> BatchView:
        """Cancel every job not yet started; running jobs finish, then the batch is canceled."""
        batch = self._batch(tenant_id, batch_id)
        if batch.status in OPEN_BATCH_STATUSES:
            with self.sessions.begin() as session:
                session.execute(update(Batch).where(Batch.id == batch_id,
                                                    Batch.status == BatchStatus.IN_PROGRESS.value)
                                .values(status=BatchStatus.CANCELING.value))
                canceled = session.execute(
                    update(Job).where(Job.batch_id == batch_id,
                                      Job.status == JobStatus.QUEUED.value)
                    .values(status=JobStatus.CANCELED.value, finished_at=utcnow())
                    .returning(Job.estimated_cost_usd, Job.cost_usd)).all()
                if canceled:
                    rollup.count_ended(session, batch_id, len(canceled), self.public_base_url)
            self.queue.settle(tenant_id, batch.created_at, len(canceled),
                              sum(r.estimated_cost_usd for r in canceled),
                              sum(r.cost_usd for r in canceled))
            metrics.JOBS_ENDED.labels(status=JobStatus.CANCELED.value, lane=BULK_LANE).inc(
                len(canceled))
            # Workers skip canceled jobs even if the index still holds them; this frees the queue.
            for page in self._pages(batch_id, select(Job.id, Job.batch_index).where(
                    Job.status == JobStatus.CANCELED.value)):
                for row in page:
                    self.queue.index.remove(row.id)
        return self.get(tenant_id, batch_id)

    # --- results ----------------------------------------------------------------------------

    def results(self, tenant_id: str, batch_id: str, page_rows: int = 1000) -> Iterator[ResultRow]:
        """Every job of the batch in input order, read a page at a time; ``line`` is the job's
        line in the uploaded file (the numbering the rejects use)."""
        self._batch(tenant_id, batch_id)
        query = select(Job.id, Job.batch_index, Job.custom_id, Job.status, Job.served_by,
                       Job.degraded, Job.images, Job.error_type, Job.error_message, Job.cost_usd,
                       Job.metadata_, Job.requested_model, Job.attempts_count)
        name = self.queue.catalogue.shown_name
        for page in self._pages(batch_id, query, page_rows):
            tried = self._attempts_for_notices(page)
            for r in page:
                notice = (job_notice(status=r.status, served_by=r.served_by,
                                     requested_model=r.requested_model, error_type=r.error_type,
                                     attempts=tried[r.id], name=name)
                          if r.id in tried else None)
                yield ResultRow(r.id, r.batch_index, r.custom_id, r.status, r.served_by,
                                r.degraded, list(r.images or []), r.error_type, r.error_message,
                                r.cost_usd, dict(r.metadata_ or {}), notice)

    def _attempts_for_notices(self, page: Sequence[Any]) -> dict[str, builtins.list[Tried]]:
        """The attempts of the jobs of a page that may have a notice (served by a fallback,
        failed for want of a model, or waiting after a walk), in one query; a healthy batch's
        page asks for none."""
        ids = [r.id for r in page
               if r.degraded or r.error_type == ALL_MODELS_UNAVAILABLE
               or (r.status == JobStatus.QUEUED.value and r.attempts_count)]
        tried: dict[str, builtins.list[Tried]] = {job_id: [] for job_id in ids}
        if not ids:
            return tried
        with self.sessions() as session:
            rows = session.execute(
                select(Attempt.job_id, Attempt.model, Attempt.outcome, Attempt.message)
                .where(Attempt.job_id.in_(ids)).order_by(Attempt.started_at, Attempt.id))
            for row in rows:
                tried[row.job_id].append(Tried(row.model, row.outcome, row.message))
        return tried

