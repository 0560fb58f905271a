"""Every Redis key and channel imagequeue uses, in one place.

Layout (all under the version prefix: a layout change bumps ``v1``, so new code can never misread
old keys; model names always end a key, so two models can never share one):

    imgq:v1:seq                   INCR counter giving each waiting job its arrival order
    imgq:v1:waiting:{lane}:{p}    ZSET job_id -> order score, one per lane and priority class;
                                  the queue is these classes read in CLASS_KEYS order
    imgq:v1:bulk:tenants          HASH tenant -> last bulk round given (tenants take turns)
    imgq:v1:bulk:round            STRING round of the last bulk job dispatched
    imgq:v1:inflight              ZSET job_id -> dispatch time (ms) for jobs handed to Celery
    imgq:v1:dispatched            HASH job_id -> "class:score", its place, kept while in flight
    imgq:v1:parked                ZSET job_id -> not_before (ms) for jobs waiting on a breaker
    imgq:v1:running               HASH job_id -> JSON {model, route, attempt/job start} (for ETAs)
    imgq:v1:latency:{model}       LIST recent attempt latencies "outcome:seconds" (newest first)
    imgq:v1:walks                 LIST recent route walks "seconds:ended_at" (for slot overhead)
    imgq:v1:snapshot              STRING JSON queue snapshot with the ETA curve, once a second
    imgq:v1:snapshots             CHANNEL the snapshot's ``as_of_s``, published with each one
    imgq:v1:tenants:changed       CHANNEL a tenant's id, published when its limits change (the API
                                  processes forget the tenants they hold)
    imgq:v1:workers               HASH worker name -> {"concurrency", "expires_at_ms"} heartbeats
    imgq:v1:dispatch:wake         LIST a nudge for the dispatcher (submit, job finished)
    imgq:v1:dispatch:count        INCR jobs dispatched so far (moves snapshot positions forward)
    imgq:v1:dispatch:lease        STRING holder id of the active dispatcher, with expiry
    imgq:v1:leases                ZSET job_id -> lease expiry (ms, Redis TIME) of dispatched jobs
    imgq:v1:lease:owners          HASH job_id -> "token" once dispatched, "token|worker" once a
                                  worker holds it, "reclaimed" once the scheduler took it back
    imgq:v1:generation            STRING marker the dispatcher sets; gone = Redis lost its data
    imgq:v1:reconcile:mark        STRING epoch seconds: reconcile's next pass reads the queued jobs
                                  created after it (gone: it reads them all)
    imgq:v1:database:unreachable  STRING with a TTL, set by workers that cannot reach the database
    imgq:v1:job:tenants           HASH job_id -> tenant of each job the index holds (waiting,
                                  parked or in flight): the pop counts each tenant's in-flight jobs
    imgq:v1:tenants:max_running   HASH tenant -> its cap on jobs in flight (0 = none); "*" -> the
                                  default cap (scheduler/tenants/quotas.py)
    imgq:v1:tenants:open          HASH tenant -> jobs accepted and not finished (max_queued)
    imgq:v1:tenants:spend:{day|month}:{period}
                                  HASH tenant -> micro-USD spent or reserved by the jobs created
                                  in that UTC day or month (the budget)
    imgq:v1:rpm:...               the requests-per-minute moving windows (the ``limits`` package)
    imgq:v1:breaker:state:{model} HASH the breaker machine state (breaker/lua/common.lua)
    imgq:v1:breaker:window:{model} HASH the sliding window, fields c:/f:/s:<second>
    imgq:v1:breaker:events        STREAM every transition of every model
    imgq:v1:breaker:inflight:{model} ZSET call id -> start (ms) of each call in flight (the gate)
    imgq:v1:limits:concurrency:{model}  ZSET holder -> expiry (ms) of each held slot
    imgq:v1:limits:rate:{model}   ZSET call id -> call time (ms) in the last minute, and :seq
"""

from __future__ import annotations

import uuid

PREFIX = "imgq:v1"

SEQ = f"{PREFIX}:seq"
BULK_TENANTS = f"{PREFIX}:bulk:tenants"
BULK_ROUND = f"{PREFIX}:bulk:round"
INFLIGHT = f"{PREFIX}:inflight"
DISPATCHED = f"{PREFIX}:dispatched"
PARKED = f"{PREFIX}:parked"
RUNNING = f"{PREFIX}:running"
SNAPSHOT = f"{PREFIX}:snapshot"
SNAPSHOT_CHANNEL = f"{PREFIX}:snapshots"
TENANTS_CHANNEL = f"{PREFIX}:tenants:changed"
WALKS = f"{PREFIX}:walks"

LANES = ("interactive", "bulk")
PRIORITIES = tuple(range(10, -11, -1))  # highest first


def waiting(lane: str, priority: int) -> str:
    return f"{PREFIX}:waiting:{lane}:{priority}"


def latency(model: str) -> str:
    return f"{PREFIX}:latency:{model}"


# Dispatch order: every interactive class (by priority) before every bulk class.
CLASS_KEYS = tuple(waiting(lane, p) for lane in LANES for p in PRIORITIES)
WORKERS = f"{PREFIX}:workers"
DISPATCH_WAKE = f"{PREFIX}:dispatch:wake"
DISPATCH_COUNT = f"{PREFIX}:dispatch:count"
DISPATCH_LEASE = f"{PREFIX}:dispatch:lease"
LEASES = f"{PREFIX}:leases"
LEASE_OWNERS = f"{PREFIX}:lease:owners"
GENERATION = f"{PREFIX}:generation"
RECONCILE_MARK = f"{PREFIX}:reconcile:mark"
DATABASE_UNREACHABLE = f"{PREFIX}:database:unreachable"
JOB_TENANTS = f"{PREFIX}:job:tenants"
TENANT_MAX_RUNNING = f"{PREFIX}:tenants:max_running"
TENANT_OPEN = f"{PREFIX}:tenants:open"
RPM_PREFIX = f"{PREFIX}:rpm"


def tenant_spend(period: str, period_id: str) -> str:
    return f"{PREFIX}:tenants:spend:{period}:{period_id}"

# Celery names shared by the dispatcher (sender) and the workers (consumers).
GENERATE_TASK = "imgq.generate"
GENERATE_QUEUE = "imgq"


# The breaker and the vendor limits (their prefix is a parameter so tests can isolate them).
BREAKER_PREFIX = f"{PREFIX}:breaker"
LIMITS_PREFIX = f"{PREFIX}:limits"
EVENTS_MAXLEN = 10_000


def breaker_state(model: str, prefix: str = BREAKER_PREFIX) -> str:
    """Hash: the machine state of one model (see lua/common.lua for its fields)."""
    return f"{prefix}:state:{model}"


def breaker_window(model: str, prefix: str = BREAKER_PREFIX) -> str:
    """Hash: the sliding window, fields ``c:<second>``, ``f:<second>``, ``s:<second>``."""
    return f"{prefix}:window:{model}"


def call_holder(job_id: str) -> str:
    """A new id for one call of a job: its entry at the slow-start gate and its vendor slot.
    It starts with ``job_holders(job_id)``, so the scheduler can free what a dead run held."""
    return f"{job_holders(job_id)}{uuid.uuid4().hex[:8]}"


def job_holders(job_id: str) -> str:
    """The prefix of every holder id of ``job_id``'s calls."""
    return f"{job_id}:"


def breaker_inflight(model: str, prefix: str = BREAKER_PREFIX) -> str:
    """Sorted set: call id -> start (epoch ms) of each call admitted and not yet recorded."""
    return f"{prefix}:inflight:{model}"


def breaker_events(prefix: str = BREAKER_PREFIX) -> str:
    """Stream: every transition of every model (MAXLEN ~ EVENTS_MAXLEN)."""
    return f"{prefix}:events"


def concurrency_holders(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """Sorted set: holder id -> expiry (epoch ms) of each held concurrency slot."""
    return f"{prefix}:concurrency:{model}"


def rate_window(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """Sorted set: call id -> call time (epoch ms) of the calls in the last minute."""
    return f"{prefix}:rate:{model}"


def rate_seq(model: str, prefix: str = LIMITS_PREFIX) -> str:
    """String: counter giving each counted call a unique id."""
    return f"{prefix}:rate:{model}:seq"
