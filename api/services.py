"""What request handlers use, built once per app from the settings (FastAPI lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.image_links import ImageLinks
from api.ratelimit import RequestRate
from api.tenant_cache import TenantCache
from breaker import BreakerStore
from breaker.factory import make_breaker_store
from imagequeue.settings import Settings
from providers.catalogue import Catalogue, load_catalogue
from scheduler.eta.snapshot import SnapshotCache
from scheduler.queue.index import WaitingIndex
from scheduler.queue.jobs import JobQueue
from scheduler.tenants.quotas import LimitDefaults, TenantCounters
from storage.blobs import BlobStore
from storage.db import make_engine, make_sessionmaker
from storage.factory import make_blob_store


def api_redis(settings: Settings) -> redis.Redis:
    """The API's Redis client: a hung Redis fails a request after ``redis_timeout_s`` (a 503)
    instead of holding it, and a refused connection is retried once at once (redis-py's default
    would back off for seconds), which also replaces pooled connections a Redis restart broke."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(ConstantBackoff(0.05), 1, supported_errors=(redis.ConnectionError,)),
    )


def api_pool(settings: Settings) -> dict[str, int]:
    """The API's pool: as many connections as the settings allow a process, all kept. Its
    threads serve polls at once, and an overflow connection given back is closed: under 16
    pollers they would come and go, each a new server process (half the requests per second)."""
    return {"database_pool_size": settings.database_pool_size + settings.database_max_overflow,
            "database_max_overflow": 0}


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    catalogue: Catalogue
    queue: JobQueue
    blobs: BlobStore
    breakers: BreakerStore
    limit_defaults: LimitDefaults
    counters: TenantCounters
    rate: RequestRate
    image_links: ImageLinks  # the signed links of the OpenAI-compatible gateway
    snapshots: SnapshotCache  # the published snapshot, read once per publication
    tenants: TenantCache  # callers by API key, held while the subscription is up

    @classmethod
    def build(cls, settings: Settings) -> Services:
        engine = make_engine(settings.database_url, settings.model_copy(update=api_pool(settings)))
        sessions = make_sessionmaker(engine)
        # Reads of one statement (a poll's job, a caller's tenant) need no transaction.
        reads = make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
        client = api_redis(settings)
        catalogue = load_catalogue(settings.catalogue_path)
        defaults = LimitDefaults.from_settings(settings)
        counters = TenantCounters(client, defaults)
        snapshots = SnapshotCache(client, max_age_s=settings.stream_fallback_poll_s)
        queue = JobQueue(sessions, WaitingIndex(client), catalogue,
                         job_deadline_s=settings.job_deadline_s, counters=counters,
                         snapshots=snapshots.read, reads=reads)
        return cls(settings, engine, sessions, client, catalogue, queue,
                   make_blob_store(settings), make_breaker_store(settings, catalogue.models),
                   defaults, counters, RequestRate(client), ImageLinks.from_settings(settings),
                   snapshots, TenantCache(reads, settings.api_tenant_cache_s))

    def close(self) -> None:
        self.redis.close()
        self.engine.dispose()
