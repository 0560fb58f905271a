"""The one settings object. Built at each entry point and passed down; never a module global."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGQ_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///var/imagequeue.db",
        description="SQLAlchemy URL; SQLite file by default, postgresql+psycopg://... to scale out.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0")
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
    image_dir: Path = Field(default=Path("var/images"))
    catalogue_path: Path | None = Field(
        default=None,
        description="The model catalogue file, TOML or JSON (.json); unset: the shipped catalogue.")
    public_base_url: str = Field(default="http://127.0.0.1:8000")

    worker_concurrency: int = Field(default=4, ge=1, le=256)
    dispatch_buffer: int = Field(default=1, ge=0, description="Jobs handed out beyond free slots.")
    dispatch_interval_s: float = Field(default=0.5, gt=0)
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
                    "dispatches.")
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
    broker_visibility_timeout_s: float = Field(
        default=3600.0, gt=0,
        description="Redis broker only: when an unacknowledged message is delivered again. It "
                    "never recovers a job (leases do); a redelivered message is recognised and "
                    "ignored.")
    database_retry_s: float = Field(
        default=600.0, gt=0,
        description="How long a worker keeps retrying the write of a finished job while the "
                    "database is unreachable (it keeps the lease and the stored image meanwhile).")
    database_backoff_s: float = Field(
        default=2.0, gt=0,
        description="After a worker finds the database unreachable the dispatcher hands out no "
                    "job for this long (then one job probes it again).")
    job_deadline_s: float = Field(default=3600.0, gt=0)

    max_prompt_chars: int = Field(default=4000, ge=1)
    max_images_per_job: int = Field(default=4, ge=1)
    max_metadata_depth: int = Field(
        default=8, ge=1, description="Levels of nesting a job's metadata may have (the object "
                                     "itself is level 1).")
    max_metadata_bytes: int = Field(
        default=16 * 1024, ge=2, description="Bytes a job's metadata may take as compact JSON.")
    admin_token: str | None = None

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
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0],
        description="Delay before each retry of a failed delivery; its length is the retry count.")
    webhook_poll_interval_s: float = Field(default=0.5, gt=0)

    breaker_mode: Literal["shared", "local", "off"] = Field(
        default="shared",
        description="shared: one breaker per model in Redis for the whole cluster; local: one per "
                    "worker process (no coordination); off: no breaker (plain try-next loop).")
    breaker_failure_rate_threshold: float = Field(default=0.30, gt=0, le=1)
    breaker_window_s: int = Field(default=60, ge=1)
    breaker_minimum_calls: int = Field(default=5, ge=1)
    breaker_open_duration_s: float = Field(default=300.0, gt=0)
    breaker_half_open_probes: int = Field(default=3, ge=1)
    breaker_quota_cooldown_s: float = Field(
        default=60.0, gt=0, description="Cooldown after a 429 that carries no Retry-After.")
    breaker_probe_margin_s: float = Field(
        default=30.0, gt=0,
        description="A probe round lasts the model's timeout plus this, then may start again.")
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
