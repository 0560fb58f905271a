"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import bodies, errors, metrics, ratelimit
from api.routes import admin, batches, events, jobs, limits, openai_images, openai_models, ops, status
from api.services import Services
from api.snapshots import SnapshotListener
from imagequeue.settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = Services.build(settings)
        services = app.state.services
        app.state.snapshots = SnapshotListener(settings.redis_url, settings.redis_timeout_s,
                                               services.snapshots, services.tenants)
        app.state.snapshots.start()  # wakes the event streams (api/snapshots.py)
        try:
            yield
        finally:
            await app.state.snapshots.stop()
            app.state.services.close()

    app = FastAPI(
        title="imagequeue",
        version="0.1.0",
        description="A job queue for text-to-image generation with failover across vendors.",
        lifespan=lifespan,
    )
    errors.install(app, retry_after_s=settings.retry_after_s)
    bodies.install(app)
    app.include_router(ops.router)
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(status.router)  # /v1/status, its stream and the /status page
    app.include_router(admin.router)
    app.include_router(limits.router)
    app.include_router(openai_images.router)  # the OpenAI-compatible gateway, OpenAI's errors
    app.include_router(openai_models.router)
    ratelimit.install(app)  # requests per minute per tenant; 429s of every tenant limit
    app.state.streams = events.StreamCounter()
    batches.install(app)
    metrics.install(app, settings.api_metrics)  # GET /metrics, requests counted (outermost)
    return app
