"""A job's path costs two transactions: its claim, which carries its first call's attempt row, and
its end, which carries its attempts, images, webhook and its batch's count. Run in this process
against a real database, Redis and the simulator; every call is still on record before it is
made, and the last job of a batch completes it (one webhook) in its own last transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, event, func, select

from cli.lab.stack import fast_catalogue
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from simulator.catalogue import write_simulator_catalogue
from storage.db import make_engine
from storage.models import Attempt, Batch, Job, JobStatus, WebhookDelivery, utcnow
from storage.tenants import create_tenant
from workers.context import WorkerContext
from workers.runner import run_job

FIRST, SECOND = load_catalogue().route("default").models[:2]


@pytest.fixture()
def ctx(database_url: str, clean_redis: str, simulator: str, tmp_path: Path
        ) -> Iterator[WorkerContext]:
    catalogue = write_simulator_catalogue(simulator, tmp_path / "sim.json",
                                          source=fast_catalogue(tmp_path, cap=1))
    settings = Settings(database_url=database_url, redis_url=clean_redis,
                        catalogue_path=catalogue, image_dir=tmp_path / "images",
                        vendor_slot_wait_s=0.2, webhook_allow_loopback=True)
    context = WorkerContext.build(settings)
    yield context
    context.close()
    engine(context).dispose()


def engine(ctx: WorkerContext) -> Engine:
    bind = ctx.sessions.kw["bind"]
    assert isinstance(bind, Engine)
    return bind


def commits(ctx: WorkerContext) -> list[int]:
    """A list that counts the transactions committed from now on."""
    count: list[int] = []
    event.listen(engine(ctx), "commit", lambda _conn: count.append(1))
    return count


@pytest.fixture()
def seen(ctx: WorkerContext, database_url: str) -> Iterator[list[tuple[str, str, int]]]:
    """Before each vendor request leaves, what another connection reads as committed: (job,
    its status, its in-progress attempt rows)."""
    reader = make_engine(database_url)
    found: list[tuple[str, str, int]] = []

    def look(request: httpx.Request) -> None:
        job_id = request.read().decode().split("job=")[-1].split('"')[0]
        with reader.connect() as connection:
            status = connection.scalar(select(Job.status).where(Job.id == job_id))
            rows = connection.scalar(select(func.count()).select_from(Attempt).where(
                Attempt.job_id == job_id, Attempt.outcome == "in_progress"))
        found.append((job_id, str(status), int(rows or 0)))

    ctx.http.event_hooks["request"].append(look)
    yield found
    reader.dispose()


def queued_jobs(ctx: WorkerContext, count: int, *, batch: bool = False,
                webhook: str | None = None) -> list[str]:
    with ctx.sessions.begin() as session:
        tenant, _ = create_tenant(session, f"t{count}{batch}")
        session.flush()
        batch_id = None
        if batch:
            row = Batch(tenant_id=tenant.id, total=count, route="default", webhook_url=webhook)
            session.add(row)
            session.flush()
            batch_id = row.id
        jobs = [Job(tenant_id=tenant.id, prompt=f"a lighthouse job={k}", width=256, height=256,
                    route="default", batch_id=batch_id, batch_index=k if batch else None)
                for k in range(count)]
        session.add_all(jobs)
        session.flush()
        ids = [job.id for job in jobs]
    with ctx.sessions.begin() as session:  # the prompt names the job, for the request hook
        for job_id in ids:
            session.get_one(Job, job_id).prompt = f"a lighthouse job={job_id}"
    return ids


def test_a_job_served_by_its_first_model_costs_two_transactions(
        ctx: WorkerContext, seen: list[tuple[str, str, int]]) -> None:
    (job_id,) = queued_jobs(ctx, 1)
    committed = commits(ctx)

    assert run_job(ctx, job_id) == JobStatus.SUCCEEDED.value

    assert len(committed) == 2
    assert seen == [(job_id, "running", 1)]  # marked running, its call on record, before it
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        assert (job.served_by, job.attempts_count, len(job.images)) == (FIRST, 1, 1)
        assert [(a.model, a.outcome) for a in job.attempts] == [(FIRST, "success")]


def test_the_last_job_of_a_batch_completes_it_in_its_own_last_transaction(
        ctx: WorkerContext) -> None:
    ids = queued_jobs(ctx, 3, batch=True, webhook="http://127.0.0.1:9/hook")
    committed = commits(ctx)

    for job_id in ids:
        assert run_job(ctx, job_id) == JobStatus.SUCCEEDED.value
        assert run_job(ctx, job_id) == "skipped"  # a message delivered twice counts once

    assert len(committed) == 2 * len(ids)
    with ctx.sessions() as session:
        batch = session.scalars(select(Batch)).one()
        assert (batch.status, batch.ended_jobs) == ("completed", 3)
        events = session.scalars(select(WebhookDelivery.event_type)
                                 .where(WebhookDelivery.subject_id == batch.id)).all()
        assert events == ["batch.completed"]


def test_a_wait_for_a_vendor_slot_commits_the_claim_first(
        ctx: WorkerContext, seen: list[tuple[str, str, int]]) -> None:
    """The first model's only slot is taken: the claim commits before the wait (no lock held
    across it), the model is skipped, and the second model's call has a row of its own."""
    (job_id,) = queued_jobs(ctx, 1)
    assert ctx.limits.acquire(FIRST, 1, "someone-else", 30)
    committed = commits(ctx)

    assert run_job(ctx, job_id) == JobStatus.SUCCEEDED.value

    assert len(committed) == 3  # claim, the second model's row, the end
    assert seen == [(job_id, "running", 1)]
    with ctx.sessions() as session:
        job = session.get_one(Job, job_id)
        assert job.served_by == SECOND
        assert [(a.model, a.outcome) for a in job.attempts] == [
            (FIRST, "skipped"), (SECOND, "success")]


def test_a_job_parked_until_later_is_not_claimed(ctx: WorkerContext) -> None:
    (job_id,) = queued_jobs(ctx, 1)
    with ctx.sessions.begin() as session:
        session.get_one(Job, job_id).not_before = utcnow() + timedelta(seconds=60)
    calls: list[Any] = []
    ctx.http.event_hooks["request"].append(calls.append)

    assert run_job(ctx, job_id) == "parked"

    assert calls == []
    with ctx.sessions() as session:
        assert session.get_one(Job, job_id).status == JobStatus.QUEUED.value
