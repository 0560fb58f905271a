"""One rule for the models a job walks (``Catalogue.models_for``): the worker walks them, the
submit check refuses a job none of them can serve, and the ETA forecasts that very walk, also for
jobs accepted before the catalogue changed (a route removed, a pinned model removed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy.orm import Session, sessionmaker

from providers.catalogue import PINNED_ROUTE, PREFERRED_ROUTE, Catalogue, Route, load_catalogue
from providers.types import GenerationRequest
from scheduler.errors import InvalidJob
from scheduler.eta.publisher import SnapshotPublisher
from scheduler.queue.index import WaitingIndex
from scheduler.queue.jobs import JobQueue, JobRequest
from workers.router import candidates

SHIPPED = load_catalogue()
DEFAULT = SHIPPED.route("default").models
LOGO = SHIPPED.route("logo").models
FAST = SHIPPED.route("fast").models
REMOVED_MODEL = "aggregator-seedream-4"  # on no route: a job can only be pinned to it
# When the jobs were accepted: a route without fallback, and one about to be removed.
BEFORE = SHIPPED.model_copy(update={"routes": {
    **SHIPPED.routes, "strict": Route(models=LOGO, allow_fallback=False),
    "retiring": Route(models=FAST)}})
# What the worker, the submit check and the ETA see now.
AFTER = BEFORE.model_copy(update={
    "routes": {name: r for name, r in BEFORE.routes.items() if name != "retiring"},
    "models": {m: spec for m, spec in BEFORE.models.items() if m != REMOVED_MODEL}})
# (route, requested model) as jobs record them, and the models each one walks.
WALKS = {
    ("default", DEFAULT[0]): DEFAULT,
    ("strict", LOGO[0]): LOGO[:1],
    ("retiring", FAST[0]): DEFAULT,  # a removed route: the default route's chain
    (PINNED_ROUTE, "gpt-image-1.5"): ("gpt-image-1.5",),
    (PINNED_ROUTE, REMOVED_MODEL): (),  # a removed pinned model: nothing to walk
    # A named model with fallback: it first, then the default route's others.
    (PREFERRED_ROUTE, "seedream-4.5"): ("seedream-4.5", *(m for m in DEFAULT if m != "seedream-4.5")),
    (PREFERRED_ROUTE, "recraftv4"): ("recraftv4", *DEFAULT),
    (PREFERRED_ROUTE, REMOVED_MODEL): DEFAULT,  # removed since: the default route's chain
}


def request_for(route: str, model: str) -> JobRequest:
    """The request that records (route, model) as a job's walk."""
    if route in (PINNED_ROUTE, PREFERRED_ROUTE):
        return JobRequest(prompt="a kite", model=model, model_fallback=route == PREFERRED_ROUTE)
    return JobRequest(prompt="a kite", route=route)


@pytest.fixture()
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    from storage.db import make_engine, make_sessionmaker, migrate

    url = f"sqlite:///{tmp_path / 'imgq.db'}"
    migrate(url)
    return make_sessionmaker(make_engine(url))


@pytest.fixture()
def client(clean_redis: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(clean_redis)
    yield connection
    connection.close()


def worker_walk(catalogue: Catalogue, route: str, requested_model: str) -> tuple[str, ...]:
    return tuple(model.id for model in candidates(catalogue, route, requested_model))


def test_the_worker_walks_what_the_rule_says_for_each_kind_of_job() -> None:
    for (route, requested_model), walked in WALKS.items():
        assert worker_walk(AFTER, route, requested_model) == walked, route


def test_the_eta_forecasts_the_walk_the_worker_takes_after_the_catalogue_changed(
        sessions: sessionmaker[Session], client: redis.Redis) -> None:
    from storage.tenants import create_tenant

    with sessions.begin() as session:
        tenant, _ = create_tenant(session, "t")
        tenant_id = tenant.id
    accepting = JobQueue(sessions, WaitingIndex(client), BEFORE)
    jobs = [accepting.submit(tenant_id, request_for(route, model)) for route, model in WALKS]
    assert [(job.route, job.requested_model) for job in jobs] == list(WALKS)

    forecast = SnapshotPublisher(client, sessions, AFTER).routes_of([job.id for job in jobs])

    for job in jobs:
        assert forecast[job.id] == worker_walk(AFTER, job.route, job.requested_model), job.route


@pytest.mark.parametrize("size", [(1024, 1024, 1), (1024, 1024, 2), (5000, 5000, 1),
                                  (1536, 1024, 4), (8192, 8192, 1)])
@pytest.mark.parametrize(("route", "requested_model"), list(WALKS))
def test_the_submit_check_refuses_exactly_the_jobs_no_walked_model_can_serve(
        route: str, requested_model: str, size: tuple[int, int, int]) -> None:
    width, height, n = size
    queue = JobQueue(None, None, AFTER)  # type: ignore[arg-type]  # the check reads no state
    walked = candidates(AFTER, route, requested_model)
    servable = any(model.can_serve(GenerationRequest("a kite", width, height, n)) is None
                   for model in walked)

    try:
        queue.check_servable(route, requested_model, JobRequest("a kite", width, height, n))
        refused = False
    except InvalidJob:
        refused = True

    assert refused is not servable


def test_a_route_without_fallback_is_checked_against_its_first_model_only() -> None:
    queue = JobQueue(None, None, AFTER)  # type: ignore[arg-type]
    two_images = JobRequest("a kite", n=2)  # only gpt-image-1.5, last on the logo chain, can

    queue.check_servable("logo", LOGO[0], two_images)
    with pytest.raises(InvalidJob, match="returns at most 1 image"):
        queue.check_servable("strict", LOGO[0], two_images)


def test_a_job_on_a_removed_route_is_checked_against_the_default_route() -> None:
    queue = JobQueue(None, None, AFTER)  # type: ignore[arg-type]
    large = JobRequest("a kite", width=5000, height=5000)  # only the default route's first model

    queue.check_servable("retiring", FAST[0], large)
    with pytest.raises(InvalidJob):
        queue.check_servable("fast", FAST[0], large)
