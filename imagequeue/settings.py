"""The one settings object. Built at each entry point and passed down; never a module global."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule for bucket names


def s3_location(url: str) -> tuple[str, str]:
    """The bucket and key prefix (``""`` or ending in ``/``) of ``s3://bucket/prefix``;
    ValueError saying what is wrong otherwise. The blob store's one reading of IMGQ_BLOB_URL."""
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not sep or not bucket or any(c in rest for c in "?#"):
        raise ValueError(f"must look like s3://bucket or s3://bucket/prefix, not {url!r}")
    if not S3_BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} in {url!r} is not an S3 bucket name (3 to 63 lowercase "
                         "letters, digits, dots and hyphens)")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


# Celery broker URL schemes and the broker each one means.
BROKER_SCHEMES: dict[str, Literal["redis", "amqp"]] = {
    "redis": "redis", "rediss": "redis", "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp"}


def broker_transport(url: str) -> Literal["redis", "amqp"]:
    """``redis`` or ``amqp`` (RabbitMQ) for a Celery broker URL; ValueError naming the schemes
    otherwise. The one reading of IMGQ_BROKER_URL's scheme."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in BROKER_SCHEMES:
        known = ", ".join(f"{name}://" for name in BROKER_SCHEMES)
        found = f"it starts with {scheme}://" if sep else "it has no scheme"
        raise ValueError(f"a Celery broker URL must start with one of {known} (Redis or "
                         f"RabbitMQ); {found}")
    return BROKER_SCHEMES[scheme]


class Settings(BaseSettings):
    # An empty variable means "not set" (Compose passes `${VAR:-}` through as an empty string).
    model_config = SettingsConfigDict(env_prefix="IMGQ_", extra="ignore", env_ignore_empty=True)

    database_url: str = Field(
        default="sqlite:///var/imagequeue.db",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... to scale out.",
    )
    database_pool_size: int = Field(
        default=5, ge=1,
        description="PostgreSQL connections each process keeps open. A worker thread holds one "
                    "only while it writes (two short transactions per job), so 5 serve more "
                    "threads than that. Every process (worker, scheduler, each API process) opens "
                    "at most this plus IMGQ_DATABASE_MAX_OVERFLOW: 7 with the defaults, so 10 "
                    "worker hosts, an API and two schedulers take at most 13 x 7 = 91 of "
                    "PostgreSQL's default max_connections = 100 (3 of them reserved for "
                    "superusers). For more processes, put PgBouncer (transaction pooling) in "
                    "front of PostgreSQL, or raise max_connections.")
    database_max_overflow: int = Field(
        default=2, ge=0,
        description="Connections a process may open beyond IMGQ_DATABASE_POOL_SIZE while all "
                    "of those are busy; each is closed when it is given back.")
    database_pool_recycle_s: float = Field(
        default=300.0, gt=0,
        description="A pooled connection older than this is replaced when next taken from the "
                    "pool, before anything between (a NAT gateway, a load balancer) drops it for "
                    "being idle. There is no ping before each use: a connection the server "
                    "closed (a restart) is seen in the socket, without a round trip, and "
                    "replaced; one that fails during use is discarded with the rest of the pool "
                    "and the write retried.")
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis of the waiting index, leases, breaker, limits, heartbeats and "
                    "snapshots (and the Celery broker unless IMGQ_BROKER_URL names another).")
    broker_url: str | None = Field(
        default=None,
        description="The Celery broker: unset, IMGQ_REDIS_URL; `amqp://user:pass@host:5672/vhost` "
                    "(or `pyamqp://`, `amqps://`), RabbitMQ, recommended in production (docs/"
                    "operations.md). Any other scheme stops the process at start-up.")
    redis_timeout_s: float = Field(
        default=2.0, gt=0,
        description="Socket and connect timeout of the API's Redis client: a hung Redis gives a "
                    "503 after this long instead of holding the request.")
    retry_after_s: int = Field(
        default=5, ge=1,
        description="The Retry-After (seconds) of a 503 when the database or Redis is unreachable.")
    ready_timeout_s: float = Field(
        default=2.0, gt=0,
        description="How long GET /readyz waits for each of the database and Redis to answer.")
    image_dir: Path = Field(
        default=Path("var/images"),
        description="The directory of the local blob store (images and their manifests); on "
                    "several hosts use an S3 store (IMGQ_BLOB_URL) or a directory all of them share.")
    blob_url: str | None = Field(
        default=None,
        description="Where images and their manifests live: unset, the directory IMGQ_IMAGE_DIR; "
                    "`s3://bucket/prefix`, an S3 bucket or S3-compatible store (MinIO...) reached "
                    "with the usual AWS variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, "
                    "AWS_SECRET_ACCESS_KEY). Anything else stops the process at start-up.")
    blob_presigned_urls: bool = Field(
        default=False,
        description="With an S3 store, the image endpoints answer 307 to a presigned GET URL of "
                    "the object (after the tenant check) instead of streaming its bytes through "
                    "the API; no effect with the local directory.")
    blob_presign_ttl_s: int = Field(
        default=300, ge=1, le=7 * 24 * 3600,
        description="How long a presigned image URL stays valid, in seconds (S3 allows 7 days).")
    catalogue_path: Path | None = Field(
        default=None,
        description="The model catalogue file, TOML or JSON (.json); unset: the shipped catalogue.")
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The API's address as clients reach it: the base of image URLs in job "
                    "documents, batch results and webhooks.")

    worker_concurrency: int = Field(
        default=4, ge=1, le=256,
        description="Threads of one worker process: the vendor calls it makes at once "
                    "(`imgq worker --concurrency` wins).")
    dispatch_buffer: int = Field(default=1, ge=0, description="Jobs handed out beyond free slots.")
    dispatch_interval_s: float = Field(
        default=0.5, gt=0,
        description="The longest the dispatcher sleeps between passes; submits, finished jobs and "
                    "worker heartbeats wake it sooner.")
    snapshot_interval_s: float = Field(
        default=1.0, gt=0, description="How often the scheduler publishes the ETA snapshot.")
    stream_fallback_poll_s: float = Field(
        default=2.0, gt=0,
        description="Each published snapshot wakes the API's event streams; one that no snapshot "
                    "woke for this long (no scheduler running, Redis unreachable) reads its job "
                    "or batch again anyway.")
    status_page_public: bool = Field(
        default=True,
        description="Whether GET /v1/status, its stream /v1/status/stream and the /status page's "
                    "figures answer anyone (true), or only a tenant's API key (false: the page "
                    "then asks for one).")
    reconcile_interval_s: float = Field(
        default=30.0, gt=0,
        description="How often the dispatcher heals Redis from the database and recovers stale "
                    "dispatches (in a thread of its own: dispatch never waits for it). Each pass "
                    "reads the queued jobs created since the last one, less "
                    "`IMGQ_RECONCILE_LOOKBACK_S`.")
    reconcile_lookback_s: float = Field(
        default=120.0, ge=0,
        description="How far before the last pass a reconcile pass reads again: longer than the "
                    "longest submit (a big batch commits its jobs at once) plus the clock skew "
                    "between API hosts. A job committed later than that is still indexed by the "
                    "next full pass.")
    reconcile_full_interval_s: float = Field(
        default=600.0, gt=0,
        description="How often a reconcile pass reads every queued job. It also does so at once "
                    "when a dispatcher becomes active, when Redis lost its data and after an "
                    "outage.")
    dispatch_stale_s: float = Field(
        default=600.0, gt=0,
        description="A dispatched job that no worker has received after this long is put back "
                    "in the queue (its message was lost). Jobs a worker has received are owned "
                    "by a lease instead (lease_s).")
    worker_heartbeat_s: float = Field(
        default=2.0, gt=0,
        description="How often a worker advertises its slots and renews the leases of its jobs.")
    lease_s: float = Field(
        default=10.0, gt=0,
        description="A worker's job is taken back and queued again this long after its last "
                    "lease renewal (the worker was killed, its host vanished, it hung). Keep it "
                    "several heartbeats long.")
    worker_shutdown_grace_s: float = Field(
        default=30.0, ge=0,
        description="On SIGTERM a worker takes no new job and lets its running ones finish for "
                    "this long; then the jobs still running go back to their places in the queue "
                    "at once and it exits. Give the service manager's stop timeout a few seconds "
                    "more.")
    broker_visibility_timeout_s: float = Field(
        default=3600.0, gt=0,
        description="Redis broker only (RabbitMQ redelivers when the consumer's connection "
                    "drops): when an unacknowledged message is delivered again. It never recovers "
                    "a job (leases do); a redelivered message is recognised and ignored.")
    database_retry_s: float = Field(
        default=600.0, gt=0,
        description="How long a worker keeps retrying the write of a finished job while the "
                    "database is unreachable (it keeps the lease and the stored image meanwhile).")
    database_backoff_s: float = Field(
        default=2.0, gt=0,
        description="After a worker finds the database unreachable the dispatcher hands out no "
                    "job for this long (then one job probes it again).")
    job_deadline_s: float = Field(
        default=3600.0, gt=0,
        description="How long an interactive job may wait and run before it fails with "
                    "`deadline_exceeded` (or `all_models_unavailable` once parked).")

    max_prompt_chars: int = Field(default=4000, ge=1, description="Characters a prompt may have.")
    max_images_per_job: int = Field(default=4, ge=1, description="The largest `n` of one job.")
    max_metadata_depth: int = Field(
        default=8, ge=1, description="Levels of nesting a job's metadata may have (the object "
                                     "itself is level 1).")
    max_metadata_bytes: int = Field(
        default=16 * 1024, ge=2, description="Bytes a job's metadata may take as compact JSON.")
    admin_token: str | None = Field(
        default=None,
        description="The Bearer token of /v1/admin (breaker actions); unset, /v1/admin answers 403.")

    # The OpenAI-compatible gateway (POST /v1/images/generations; docs/api.md).
    gateway_wait_s: float = Field(
        default=120.0, gt=0,
        description="How long a gateway call waits for its job's images before answering 503 "
                    "(a job not started by then is canceled unless the call sent an "
                    "Idempotency-Key); a call may ask for less with `x-imagequeue-wait`.")
    gateway_poll_s: float = Field(
        default=0.5, gt=0,
        description="While a gateway call waits, it reads its job at each published snapshot "
                    "and at least this often, and notices a client that went away.")
    gateway_url_secret: SecretStr | None = Field(
        default=None,
        description="The HMAC key of the signed image links (`response_format: url`). Give "
                    "every API process the same one; unset, each process makes its own at "
                    "start-up, so a link works only on the process that made it, until it "
                    "restarts.")
    gateway_url_ttl_s: int = Field(
        default=3600, ge=1, description="How long a signed image link works.")

    max_batch_lines: int = Field(default=50_000, ge=1, description="Lines in one batch upload.")
    max_batch_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="Bytes of one upload.")
    batch_job_deadline_s: float = Field(default=86_400.0, gt=0,
                                        description="How long a bulk job may wait and run.")

    webhook_allow_loopback: bool = Field(
        default=False, description="Allow webhooks to 127.0.0.0/8 and ::1 (tests, local demos).")
    webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs a webhook may reach although private (e.g. [\"10.20.0.0/16\"]).")
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, description="How long one webhook delivery may take before it counts "
                                         "as failed and is retried.")
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0],
        description="Delay before each retry of a failed delivery; its length is the retry count.")
    webhook_poll_interval_s: float = Field(
        default=0.5, gt=0, description="How often the scheduler looks for deliveries that are due.")

    breaker_mode: Literal["shared", "local", "off"] = Field(
        default="shared",
        description="shared: one breaker per model in Redis for the whole cluster; local: one per "
                    "worker process (no coordination); off: no breaker (plain try-next loop).")
    breaker_failure_rate_threshold: float = Field(
        default=0.30, gt=0, le=1,
        description="The share of failed calls in the window that opens a model's breaker.")
    breaker_window_s: int = Field(
        default=60, ge=1, description="The sliding window of outcomes the failure rate is computed on.")
    breaker_minimum_calls: int = Field(
        default=5, ge=1,
        description="Outcomes the window must hold before its failure rate can open the breaker.")
    breaker_open_duration_s: float = Field(
        default=300.0, gt=0,
        description="How long an open breaker sends no call to its model before half-open probes.")
    breaker_half_open_probes: int = Field(
        default=3, ge=1,
        description="Probe calls a half-open breaker admits, cluster-wide; all must succeed to close it.")
    breaker_quota_cooldown_s: float = Field(
        default=60.0, gt=0, description="Cooldown after a 429 that carries no Retry-After.")
    breaker_probe_margin_s: float = Field(
        default=30.0, gt=0,
        description="A probe round lasts the model's timeout plus this, then may start again. "
                    "A call counts as in flight for at most as long (a killed worker's call "
                    "cannot hold the slow-start gate).")
    breaker_gate: bool = Field(
        default=True,
        description="The slow-start gate: while a model's window holds fewer outcomes than "
                    "IMGQ_BREAKER_MINIMUM_CALLS (cold start, idle spell, Redis loss, just "
                    "closed), at most that many calls to it are in flight across the cluster; "
                    "each success widens it by one, each failure narrows it. Also hang "
                    "detection: calls running past the slow threshold with no success since "
                    "send new jobs to the next model. false: the plain shared breaker.")
    breaker_gate_full_calls: int = Field(
        default=64, ge=1,
        description="Width at which the slow-start gate stops limiting calls in flight.")
    breaker_gate_wait_s: float = Field(
        default=10.0, ge=0,
        description="How long a job waits at a shut slow-start gate for the model's first "
                    "results before it goes on to the next model.")
    vendor_rate_window_s: float = Field(
        default=60.0, gt=0,
        description="The window of the catalogue's requests_per_minute limits (60 s; shorter only "
                    "to scale time down in benchmarks).")
    vendor_slot_wait_s: float = Field(
        default=2.0, ge=0,
        description="How long an attempt waits for a model's concurrency slot or rate budget "
                    "before skipping the model.")
    vendor_slot_margin_s: float = Field(
        default=30.0, gt=0,
        description="A concurrency slot expires this long after the model's timeout, so a "
                    "crashed worker frees it.")
    verify_images_fully: bool = Field(
        default=False,
        description="Decode every pixel of each image a vendor returns before accepting it. "
                    "Off, an image is checked without decoding: its header (format, size, no "
                    "decompression bomb) and, for a PNG, every chunk to the end with its "
                    "checksum, which refuses garbage and truncated PNGs at a hundredth of the "
                    "CPU; only a JPEG or WebP cut short after its header, or pixel data that "
                    "does not decode, gets through.")
    park_backoff_s: float = Field(
        default=5.0, gt=0,
        description="How long a job waits before another walk when its models failed but none "
                    "is denied with a known end.")

    # Per-tenant limits: the defaults of tenants whose own column is NULL (`imgq tenant set`).
    tenant_rpm: int = Field(
        default=600, ge=0,
        description="Requests per minute a tenant may send the API (moving window; 0 = no limit).")
    tenant_max_queued: int = Field(
        default=100_000, ge=0,
        description="Jobs a tenant may have accepted and not finished (waiting or running) at "
                    "once; a batch that would go over is refused whole (0 = no limit).")
    tenant_max_running: int = Field(
        default=0, ge=0,
        description="Jobs of one tenant in flight at once, its share of the worker slots; the "
                    "dispatcher passes over its jobs while it is at the cap (0 = no cap).")
    tenant_budget_usd: float | None = Field(
        default=None, ge=0,
        description="Spend per budget period (estimated at submit, settled at finish); over it, "
                    "new jobs are refused (unset or 0 = no budget).")
    tenant_budget_period: Literal["day", "month"] = Field(
        default="month", description="The budget's period, a UTC day or calendar month.")
    tenant_queued_retry_after_s: int = Field(
        default=10, ge=1,
        description="The Retry-After of a 429 quota_exceeded (room frees as jobs finish).")
    tenant_limits_refresh_s: float = Field(
        default=5.0, gt=0,
        description="How often the dispatcher reloads the tenants' max_running caps from the "
                    "database (`imgq tenant` also writes them to Redis at once).")
    dispatch_scan_limit: int = Field(
        default=5000, ge=1,
        description="Waiting jobs one dispatch looks through to pass over those of tenants at "
                    "their max_running cap.")

    api_workers: int = Field(
        default=1, ge=1, le=64,
        description="Processes `imgq api` runs on its port (`--workers` wins), each with its own "
                    "pools; about one per core. With more than one and no "
                    "`IMGQ_GATEWAY_URL_SECRET`, `imgq api` makes one secret for all of them.")
    api_tenant_cache_s: float = Field(
        default=5.0, ge=0,
        description="How long an API process keeps a caller's tenant instead of reading it per "
                    "request (0 = read it every time). `imgq tenant set` makes every process "
                    "forget at once; this is the longest a change can lag if that message is "
                    "lost.")

    # Prometheus metrics (docs/operations.md): the API on its own port, the others on theirs.
    api_metrics: bool = Field(
        default=True,
        description="Serve GET /metrics on the API's port (unauthenticated: turn it off, or keep "
                    "the path off the public load balancer, where the API faces the internet).")
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="The port on which a worker serves GET /metrics and GET /healthz (0 = off). "
                    "Several workers on one host need one port each.")
    scheduler_metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="The port on which the scheduler serves GET /metrics (the queue, breaker, "
                    "ETA and webhook figures) and GET /healthz (0 = off).")
    metrics_host: str = Field(
        default="127.0.0.1",
        description="The interface the worker's and the scheduler's metrics ports bind "
                    "(0.0.0.0 in a container that Prometheus scrapes from outside).")

    @field_validator("broker_url", mode="before")
    @classmethod
    def _broker_url_is_redis_or_rabbitmq(cls, value: object) -> object:
        """Empty means unset (the Redis broker); an unknown scheme stops the process at start-up
        rather than failing inside Celery at the first connection."""
        if value == "":
            return None
        if isinstance(value, str):
            broker_transport(value)
        return value

    @field_validator("blob_url", mode="before")
    @classmethod
    def _blob_url_names_a_bucket(cls, value: object) -> object:
        """An empty IMGQ_BLOB_URL (as Compose passes an unset variable) means unset; any other
        value must be an S3 location, so a typo stops the process instead of writing elsewhere."""
        if value == "":
            return None
        if isinstance(value, str):
            s3_location(value)
        return value
