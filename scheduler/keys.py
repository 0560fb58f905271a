"""Every Redis key the queue uses, in one place. The breaker names its own keys in breaker/keys.py.

Layout (all under the version prefix, so a layout change cannot misread old keys):

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
    imgq:v1:workers               HASH worker name -> {"concurrency", "expires_at_ms"} heartbeats
    imgq:v1:dispatch:wake         LIST a nudge for the dispatcher (submit, job finished)
    imgq:v1:dispatch:count        INCR jobs dispatched so far (moves snapshot positions forward)
    imgq:v1:dispatch:lease        STRING holder id of the active dispatcher, with expiry
    imgq:v1:leases                ZSET job_id -> lease expiry (ms, Redis TIME) of dispatched jobs
    imgq:v1:lease:owners          HASH job_id -> "token" once dispatched, "token|worker" once a
                                  worker holds it, "reclaimed" once the scheduler took it back
    imgq:v1:generation            STRING marker the dispatcher sets; gone = Redis lost its data
    imgq:v1:database:unreachable  STRING with a TTL, set by workers that cannot reach the database
    imgq:v1:job:tenants           HASH job_id -> tenant of each job the index holds (waiting,
                                  parked or in flight): the pop counts each tenant's in-flight jobs
    imgq:v1:tenants:max_running   HASH tenant -> its cap on jobs in flight (0 = none); "*" -> the
                                  default cap (scheduler/quotas.py)
    imgq:v1:tenants:open          HASH tenant -> jobs accepted and not finished (max_queued)
    imgq:v1:tenants:spend:{day|month}:{period}
                                  HASH tenant -> micro-USD spent or reserved by the jobs created
                                  in that UTC day or month (the budget)
    imgq:v1:rpm:...               the requests-per-minute moving windows (the ``limits`` package)
"""

from __future__ import annotations

PREFIX = "imgq:v1"

SEQ = f"{PREFIX}:seq"
BULK_TENANTS = f"{PREFIX}:bulk:tenants"
BULK_ROUND = f"{PREFIX}:bulk:round"
INFLIGHT = f"{PREFIX}:inflight"
DISPATCHED = f"{PREFIX}:dispatched"
PARKED = f"{PREFIX}:parked"
RUNNING = f"{PREFIX}:running"
SNAPSHOT = f"{PREFIX}:snapshot"
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
