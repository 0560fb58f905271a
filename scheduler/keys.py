"""Every Redis key the queue uses, in one place. The breaker names its own keys in breaker/keys.py.

Layout (all under the version prefix, so a layout change cannot misread old keys):

    imgq:v1:seq                   INCR counter giving each waiting job its arrival order
    imgq:v1:waiting               ZSET job_id -> arrival order (the queue itself; FCFS)
    imgq:v1:inflight              ZSET job_id -> dispatch time (ms) for jobs handed to Celery
    imgq:v1:parked                ZSET job_id -> not_before (ms) for jobs waiting on a breaker
    imgq:v1:workers               HASH worker name -> {"concurrency", "expires_at_ms"} heartbeats
    imgq:v1:dispatch:wake         LIST a nudge for the dispatcher (submit, job finished)
    imgq:v1:dispatch:lease        STRING holder id of the active dispatcher, with expiry
"""

from __future__ import annotations

PREFIX = "imgq:v1"

SEQ = f"{PREFIX}:seq"
WAITING = f"{PREFIX}:waiting"
INFLIGHT = f"{PREFIX}:inflight"
PARKED = f"{PREFIX}:parked"
WORKERS = f"{PREFIX}:workers"
DISPATCH_WAKE = f"{PREFIX}:dispatch:wake"
DISPATCH_LEASE = f"{PREFIX}:dispatch:lease"

# Celery names shared by the dispatcher (sender) and the workers (consumers).
GENERATE_TASK = "imgq.generate"
GENERATE_QUEUE = "imgq"
