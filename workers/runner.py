"""Running one dispatched job: load, mark running, route, store images, record the outcome.

Redelivery is normal with ``acks_late``: a job already terminal is acknowledged and skipped; a
message whose dispatch is stale, or whose job another live worker holds, is ignored. A job that
finds no model (all denied or failing) is parked (see ``workers.parking``) until its deadline,
then fails with ``all_models_unavailable`` and the list of what was tried.

Crash safety (``workers.journal``, ``workers.results``, ``scheduler.queue.leases``): every call is on
record before it is made, a paid image is kept before it is recorded, a write that fails because
the database is unreachable is retried while the job keeps its lease, and a job that cannot be
loaded goes back to its place in the queue.

A job that runs once costs two transactions: the claim (marked running, with its first call's
attempt row: ``OpenClaim``) and the end (attempts completed, status, images, webhook, the
batch's count: ``_record``). Failover, resuming a task and parking cost more.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis
from sqlalchemy import Table, bindparam, exists, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import UpdateBase
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential

from imagequeue import metrics
from providers import call as call_provider
from providers.catalogue import ModelSpec
from providers.errors import ProviderError
from providers.types import GenerationRequest, GenerationResult, TaskHooks
from scheduler.batches.rollup import job_ended
from scheduler.eta import telemetry
from scheduler.outages import DATABASE_ERRORS
from storage.models import (
    TERMINAL_STATUSES,
    UNFINISHED_STATUSES,
    Attempt,
    Job,
    JobStatus,
    utcnow,
)
from workers import parking, results
from workers.admission import Admission, LimitsConfig
from workers.context import WorkerContext
from workers.journal import (
    AttemptJournal,
    DatabaseUnreachable,
    OpenClaim,
    PendingTask,
    start_run,
    totals,
    write_attempts,
)
from workers.router import AttemptHooks, AttemptRecord, CompositeHooks, RouteOutcome, candidates, walk

log = logging.getLogger(__name__)

PARKED = "parked"
HANDED_BACK = "handed back"
START_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, DatabaseUnreachable)
T = TypeVar("T")


def run_job(ctx: WorkerContext, job_id: str, dispatch_token: int | None = None) -> str:
    """Run a job to a terminal state or park it; returns the status it ended in (or why not).

    The job is held under a lease from here until its Redis state is cleared. Whatever ends the
    run early (a crash, an error nobody expected, a result that could not be recorded) leaves
    the lease to run out, and the scheduler puts the job back in the queue.
    """
    if dispatch_token is not None and not ctx.leases.holds(job_id, dispatch_token):
        # Not taken when its message was received (``workers.app``): ask Redis now.
        if not _is_current(ctx, job_id, dispatch_token):
            log.info("job %s: stale dispatch %s (the job was requeued since); ignoring it",
                     job_id, dispatch_token)
            return "stale"
        if not ctx.leases.hold(job_id, dispatch_token):
            log.info("job %s: another worker holds it (a message delivered twice); ignoring it",
                     job_id)
            return "duplicate"
    clear = False  # True once the job's Redis state may be cleared (it ended or is elsewhere)
    claim: OpenClaim | None = None
    try:
        try:
            started = _start(ctx, job_id)
        except START_ERRORS as exc:
            return _give_back(ctx, job_id, exc)
        if isinstance(started, str):
            clear = started != PARKED
            return started
        job, claim, pending, stored = started
        if stored is not None:  # an earlier run was paid and stored the image: record it
            status = _record_success(ctx, job, stored, kept=True)
            clear = True
            return status
        try:
            outcome, admission, row_ids = _route(ctx, job, pending, claim)
            claim.commit()  # (done already if a call was made)
        except DatabaseUnreachable as exc:
            return _give_back(ctx, job_id, exc)
        _count_attempts(outcome.attempts)
        if ctx.leases.handed_back(job_id):  # this worker is leaving: the job runs elsewhere
            log.warning("job %s was handed back while its route was walked; its outcome here "
                        "is not recorded", job_id)
            return HANDED_BACK
        now_ms = int(time.time() * 1000)
        deadline_ms = parking.epoch_ms(_deadline(ctx, job))
        if outcome.result is None and not outcome.job_failed and now_ms < deadline_ms:
            not_before_ms = parking.not_before_ms(
                outcome, admission.retry_at_ms, admission.limited, now_ms,
                ctx.settings.park_backoff_s, deadline_ms)
            if _park(ctx, job, outcome, row_ids, not_before_ms):
                return PARKED
        status = _finish(ctx, job, outcome, row_ids)
        clear = True
        return status
    finally:
        if claim is not None:
            claim.close()  # rolled back if the run stopped before it committed: job untouched
        ctx.leases.drop(job_id)  # first, so that no renewal re-creates what is cleared next
        if clear:
            _clear(ctx, job_id)


def _give_back(ctx: WorkerContext, job_id: str, error: BaseException) -> str:
    """The database is unreachable: the job goes back to its place in the queue, untouched, and
    the dispatcher holds back for a while."""
    log.warning("job %s: the database is unreachable (%s); back to its place in the queue",
                job_id, error)
    ctx.leases.drop(job_id)
    try:
        ctx.index.requeue([job_id])
        ctx.leases.leases.report_database_unreachable(int(ctx.settings.database_backoff_s * 1000))
    except redis.RedisError as exc:  # its lease runs out and the scheduler takes it back
        log.warning("job %s: cannot give it back either (%s); its lease will run out", job_id, exc)
    return "requeued"


def _clear(ctx: WorkerContext, job_id: str) -> None:
    try:
        ctx.index.finished(job_id)
    except redis.RedisError as exc:  # the scheduler clears the entries of ended jobs itself
        log.warning("job %s ended; cannot clear its queue entries now (%s)", job_id, exc)


def _is_current(ctx: WorkerContext, job_id: str, token: int) -> bool:
    try:
        return ctx.index.is_current_dispatch(job_id, token)
    except redis.RedisError as exc:  # without Redis we cannot tell: run it (at least once)
        log.warning("cannot check the dispatch of %s: %s", job_id, exc)
        return True


def _route(ctx: WorkerContext, job: Job, pending: PendingTask | None, claim: OpenClaim
           ) -> tuple[RouteOutcome, Admission, list[int]]:
    """Resume the vendor task an earlier run left open, else (or if it fails) walk the route.
    Returns the outcome and the attempt rows of the calls made, in order. The first call's row
    commits with ``claim``, which commits early if a vendor slot must be waited for."""
    request = GenerationRequest(prompt=job.prompt, width=job.width, height=job.height,
                                n=job.n, quality=job.quality)
    models = candidates(ctx.catalogue, job.route, job.requested_model)
    admission = Admission(ctx.breaker, ctx.limits, job.id, LimitsConfig(
        ctx.settings.vendor_slot_wait_s, ctx.settings.vendor_slot_margin_s,
        ctx.settings.vendor_rate_window_s, ctx.settings.breaker_gate_wait_s),
        on_wait=claim.commit_early, in_flight=ctx.calls)
    resumed = _resume(ctx, pending, request, admission) if pending is not None else None
    if resumed is not None and (resumed.result is not None or resumed.job_failed):
        return resumed, admission, [pending.row_id] if pending else []
    journal = AttemptJournal(ctx.sessions, job.id, job.n, ctx.leases.worker_id, claim)

    def call(model: ModelSpec, req: GenerationRequest) -> GenerationResult:
        return call_provider(ctx.http, model, req, journal.task_hooks(model),
                             decode_fully=ctx.settings.verify_images_fully)

    telemetry_hooks = TelemetryHooks(ctx, job.id, tuple(m.id for m in models))
    admission.on_gate_wait = telemetry_hooks.waiting
    outcome = walk(models, request, call, CompositeHooks([admission, telemetry_hooks, journal]))
    telemetry_hooks.walked()
    if resumed is None or pending is None:
        return outcome, admission, journal.row_ids
    outcome.attempts[:0] = resumed.attempts
    return outcome, admission, [pending.row_id, *journal.row_ids]


def _resume(ctx: WorkerContext, pending: PendingTask, request: GenerationRequest,
            admission: Admission) -> RouteOutcome | None:
    """Poll the task an earlier run submitted (and paid for) instead of submitting again."""
    model = ctx.catalogue.models.get(pending.model)
    if model is None:
        return None
    log.info("job resumes %s task %s instead of submitting again", model.id, pending.task.task_id)
    walked = walk([model], request,
                  lambda m, req: call_provider(ctx.http, m, req, TaskHooks(resume=pending.task),
                                               decode_fully=ctx.settings.verify_images_fully),
                  _Recorder(admission))
    return walked


class _Recorder(AttemptHooks):
    """Resuming is not a new call: the breaker learns its outcome, no admission is asked."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        self.admission.after(model, outcome, latency_s, error)


class TelemetryHooks(AttemptHooks):
    """Tells the scheduler which model a running job is trying, how long attempts and the whole
    walk take."""

    def __init__(self, ctx: WorkerContext, job_id: str, route: tuple[str, ...]) -> None:
        self.ctx, self.job_id, self.route = ctx, job_id, route
        self.job_started_s = time.time()
        self.model_index, self.attempt_started_s = 0, self.job_started_s

    def before(self, index: int, model: ModelSpec) -> str | None:
        self._mark(index)
        return None

    def waiting(self, index: int, model: ModelSpec, why: str) -> None:
        """The job waits at ``model``'s slow-start gate (``why``, shown in its status)."""
        self._mark(index, why)

    def _mark(self, index: int, waiting_for: str | None = None) -> None:
        self.model_index, self.attempt_started_s = index, time.time()
        try:
            telemetry.mark_attempt(self.ctx.redis, self.job_id, self.route, index,
                                   self.job_started_s, waiting_for)
        except redis.RedisError as exc:  # ETAs get worse; the job goes on
            log.warning("cannot record running job %s: %s", self.job_id, exc)

    def walked(self) -> None:
        """The walk is over: its length (calls and admission waits) tells the slot overhead."""
        try:
            telemetry.record_walk(self.ctx.redis, self.job_id, self.route, self.model_index,
                                  self.job_started_s, self.attempt_started_s)
        except redis.RedisError as exc:
            log.warning("cannot record the route walk of %s: %s", self.job_id, exc)

    def after(self, model: ModelSpec, outcome: str, latency_s: float,
              error: ProviderError | None) -> None:
        if error is not None and error.error_class.is_job_level:
            return  # says nothing about the model's speed
        try:
            telemetry.record_latency(self.ctx.redis, model.id, error is None, latency_s)
        except redis.RedisError as exc:
            log.warning("cannot record latency of %s: %s", model.id, exc)


JOBS: Table = Job.__table__  # type: ignore[assignment]
_NOW = bindparam("now", type_=JOBS.c.started_at.type)
# What a run reads of its job, returned by the claim itself.
RUN_FIELDS = ("id", "prompt", "width", "height", "n", "quality", "route", "requested_model",
              "created_at", "deadline_at")
# Built once with bind parameters, in Core (an ORM update returning the entity costs twice the
# CPU): a job parked until later is not claimed; the claim tells whether an earlier run left
# attempts.
_START = (update(JOBS).where(
    JOBS.c.id == bindparam("job_id"), JOBS.c.status.in_(UNFINISHED_STATUSES),
    ~((JOBS.c.status == JobStatus.QUEUED.value) & JOBS.c.not_before.is_not(None)
      & (JOBS.c.not_before > _NOW)))
    .values(status=JobStatus.RUNNING.value, started_at=_NOW)
    .returning(*(JOBS.c[name] for name in RUN_FIELDS),
               exists().where(Attempt.job_id == JOBS.c.id).label("ran_before")))


def _start(ctx: WorkerContext, job_id: str
           ) -> str | tuple[Job, OpenClaim, PendingTask | None, results.StoredResult | None]:
    """Mark the job running in a transaction left open (``OpenClaim``); a status instead when
    there is nothing to run. A job that ran before may have left a vendor task to resume or a
    stored result to record: its claim is committed at once, before either is looked for."""
    session = ctx.sessions()
    claim = OpenClaim(session)
    try:
        started = session.execute(_START, {"job_id": job_id, "now": utcnow()}).one_or_none()
        if started is None:
            status = _not_started(ctx, session, job_id)
            claim.close()  # nothing was written
            return status
        job = Job(**{name: getattr(started, name) for name in RUN_FIELDS})  # not in a session
        if not started.ran_before:
            return job, claim, None, None
        pending = start_run(session, job_id)
        claim.commit()
    except BaseException:
        claim.close()
        raise
    return job, claim, pending, results.load(ctx.blobs, job_id)


def _not_started(ctx: WorkerContext, session: Session, job_id: str) -> str:
    """Why the job could not be marked running: gone, ended, or parked until later."""
    job = session.scalar(select(Job).where(Job.id == job_id))
    if job is None:
        log.warning("job %s does not exist; dropping its task", job_id)
        return "skipped"
    if JobStatus(job.status).is_terminal:
        log.info("job %s is already %s; skipping", job_id, job.status)
        return "skipped"
    waiting_ms = _still_parked_ms(job)
    if waiting_ms is not None:  # dispatched early, e.g. re-indexed after a Redis flush
        ctx.index.park(job_id, waiting_ms)
        return PARKED
    log.info("job %s ended before it could start; skipping", job_id)
    return "skipped"


def _still_parked_ms(job: Job) -> int | None:
    """The job's ``not_before`` if it is queued and that moment is still ahead."""
    if job.status != JobStatus.QUEUED.value or job.not_before is None:
        return None
    not_before_ms = parking.epoch_ms(job.not_before)
    return not_before_ms if not_before_ms > time.time() * 1000 else None


def _deadline(ctx: WorkerContext, job: Job) -> datetime:
    if job.deadline_at is not None:
        return job.deadline_at
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
    return created + timedelta(seconds=ctx.settings.job_deadline_s)


def _write(ctx: WorkerContext, job_id: str, what: str, change: Callable[[Session], T],
           on_outage: Callable[[], None] = lambda: None) -> T:
    """One transaction, retried with backoff while the database is unreachable; the job keeps
    its lease meanwhile (and the dispatcher holds back), and ``on_outage`` runs once, before the
    first retry. Returns what ``change`` returned."""
    def waiting(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            on_outage()
            log.warning("job %s: cannot write its %s, the database is unreachable (%s); "
                        "retrying for up to %.0fs", job_id, what,
                        state.outcome.exception() if state.outcome else "?",
                        ctx.settings.database_retry_s)
        with contextlib.suppress(redis.RedisError):
            ctx.leases.leases.report_database_unreachable(
                int(ctx.settings.database_backoff_s * 1000))

    for attempt in Retrying(retry=retry_if_exception_type(DATABASE_ERRORS),
                            wait=wait_exponential(multiplier=0.1, max=2.0),
                            stop=stop_after_delay(ctx.settings.database_retry_s),
                            before_sleep=waiting, reraise=True):
        with attempt, ctx.sessions.begin() as session:
            return change(session)
    raise AssertionError("unreachable")  # pragma: no cover - Retrying returns or raises


def _park(ctx: WorkerContext, job: Job, outcome: RouteOutcome, row_ids: list[int],
          not_before_ms: int) -> bool:
    """Database first (the source of truth), then the index; False if the job was canceled or
    finished meanwhile."""
    def change(session: Session) -> bool:
        write_attempts(session, job.id, outcome.attempts, row_ids)
        return parking.park_in_database(session, job.id, not_before_ms)

    parked = _write(ctx, job.id, "parking", change)
    if parked:
        ctx.index.park(job.id, not_before_ms)
        log.info("job %s parked until %s: no model available (%s)", job.id,
                 parking.from_epoch_ms(not_before_ms).isoformat(), _tried(outcome.attempts))
    return parked


def _tried(attempts: list[AttemptRecord]) -> str:
    return ", ".join(f"{a.model}: {a.message or a.outcome}" if a.outcome != "success"
                     else f"{a.model}: success" for a in attempts)


def _finish(ctx: WorkerContext, job: Job, outcome: RouteOutcome, row_ids: list[int]) -> str:
    if outcome.result is not None:  # paid for: kept in the blob store before anything else
        return _record_success(ctx, job, results.store(ctx.blobs, job.id, outcome, row_ids))
    values: dict[str, object] = {"finished_at": utcnow()}
    if outcome.job_failed:
        error = outcome.error
        assert error is not None
        values |= {"status": JobStatus.FAILED.value, "error_type": error.error_class.value,
                   "error_message": error.message, "error_vendor_status": error.vendor_status}
    else:
        last = outcome.last_failure
        values |= {"status": JobStatus.FAILED.value, "error_type": "all_models_unavailable",
                   "error_message": f"no model on the route served the job before its deadline "
                                    f"(tried {_tried(outcome.attempts)})"
                                    + (f"; last error: {last.message}" if last else ""),
                   "error_vendor_status": last.vendor_status if last else None}
    _record(ctx, job.id, outcome.attempts, row_ids, values)
    return str(values["status"])


def _record_success(ctx: WorkerContext, job: Job, stored: results.StoredResult,
                    *, kept: bool = False) -> str:
    """Record a stored result; while the database is unreachable its manifest is kept first
    (unless it was, ``kept``: it came from one)."""
    def keep() -> None:
        if not kept:
            results.keep(ctx.blobs, job.id, stored)

    _record(ctx, job.id, stored.attempts, stored.row_ids, {
        "finished_at": utcnow(), "status": JobStatus.SUCCEEDED.value,
        "served_by": stored.served_by, "degraded": stored.served_by != job.requested_model,
        "images": stored.images}, on_outage=keep)
    return JobStatus.SUCCEEDED.value


def _record(ctx: WorkerContext, job_id: str, attempts: list[AttemptRecord], row_ids: list[int],
            values: dict[str, object], on_outage: Callable[[], None] = lambda: None) -> None:
    """The job's terminal write: its attempts completed, its status, and its count and cost
    summed from its attempt rows (so a call lost by a dead run is counted too); in the same
    transaction its webhook and its batch's count. The run that ended the job (one, however
    often it was delivered) settles it with its tenant's limits."""
    def change(session: Session) -> Any:
        write_attempts(session, job_id, attempts, row_ids)
        ended = session.execute(_end_statement(tuple(values)), {
            "job_id": job_id, **{f"v_{name}": value for name, value in values.items()}
        }).one_or_none()
        if ended is not None:  # its webhook, and its batch's count (last: the batch row locks)
            job_ended(session, job_id, ended.batch_id, ctx.settings.public_base_url,
                      webhook=ended.webhook_url is not None, name=ctx.catalogue.shown_name)
        return ended

    ended = _write(ctx, job_id, "result", change, on_outage)
    if ended is not None:
        _settle(ctx, job_id, ended)
        _count_end(ended)


# What the end of a job returns: enough to settle it, count it, and notify about it.
ENDED_FIELDS = ("id", "tenant_id", "batch_id", "webhook_url", "status", "lane", "served_by",
                "degraded", "created_at", "started_at", "finished_at", "estimated_cost_usd",
                "cost_usd")


@functools.cache
def _end_statement(fields: tuple[str, ...]) -> UpdateBase:
    """The job's terminal update setting ``fields`` (one statement per set of fields, built once
    with bind parameters, in Core, see ``_START``)."""
    return (update(JOBS).where(JOBS.c.id == bindparam("job_id"),
                               JOBS.c.status.not_in(TERMINAL_STATUSES))
            .values({**{name: bindparam(f"v_{name}", type_=JOBS.c[name].type) for name in fields},
                     **totals()})
            .returning(*(JOBS.c[name] for name in ENDED_FIELDS)))


def _count_attempts(attempts: list[AttemptRecord]) -> None:
    """A walk's models tried, by outcome, and what its calls cost (``imagequeue.metrics``)."""
    for attempt in attempts:
        metrics.ATTEMPTS.labels(model=attempt.model, outcome=attempt.outcome).inc()
        if attempt.cost_usd > 0:
            metrics.VENDOR_COST.labels(model=attempt.model).inc(attempt.cost_usd)


def _count_end(ended: Any) -> None:
    """The job this run ended: its status, its wait in the queue and its run time."""
    metrics.JOBS_ENDED.labels(status=ended.status, lane=ended.lane).inc()
    if ended.served_by is not None:
        metrics.JOBS_SERVED.labels(model=ended.served_by,
                                   fallback="true" if ended.degraded else "false").inc()
    if ended.started_at is None:
        return
    metrics.QUEUE_WAIT.labels(lane=ended.lane).observe(
        max(0.0, (ended.started_at - ended.created_at).total_seconds()))
    if ended.finished_at is not None:
        metrics.RUN_TIME.labels(lane=ended.lane, status=ended.status).observe(
            max(0.0, (ended.finished_at - ended.started_at).total_seconds()))


def _settle(ctx: WorkerContext, job_id: str, ended: Any) -> None:
    """Out of the tenant's open jobs; its reservation replaced by its real cost (the rebuild
    corrects the counters if Redis is unreachable now)."""
    try:
        ctx.counters.settle(ended.tenant_id, ended.created_at, 1, ended.estimated_cost_usd,
                            ended.cost_usd)
    except redis.RedisError as exc:
        log.warning("job %s ended; cannot settle it with its tenant's limits now (%s)", job_id,
                    exc)


__all__ = ["run_job"]
