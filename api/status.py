"""The status document: what ``GET /v1/status``, its event stream and the ``/status`` page show.

One function builds it (``status_document``), from what the cluster already keeps:

* each model's breaker (state, window, open-until, cooldown, last transitions: ``breaker/``),
  turned into a badge colour and a reason in words; its slow-start gate's limit (null: not
  limiting) and its calls in flight, how many of them slow now;
* each model's recent latencies (the workers' samples in Redis, ``scheduler/eta/telemetry.py``):
  the p50 of its last successful calls against the catalogue's baseline, and how many jobs the
  models served per minute;
* the queue: each lane's depth and the ETA a new job would get (the published snapshot), jobs
  running, workers alive and their slots, and each worker (``scheduler.queue.heartbeats.roster``:
  host, pid, version, the jobs it holds, the age of its last beat);
* recent failovers, from the last attempt rows in the database (one query).

Redis or the database unreachable raises (a 503): the status never shows stale figures as live.

``StatusFeed`` shares one document among every status stream of an API process: it is built at
most once per published snapshot (and, while none comes, at most twice per fallback period),
whatever the number of clients.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from api import breakers
from api.services import Services
from providers.catalogue import ModelSpec
from scheduler.eta import telemetry
from scheduler.queue import heartbeats
from storage.models import Attempt, AttemptOutcome

TRANSITIONS = 3
"""Last breaker transitions shown per model."""
P50_CALLS = 100
"""A model's p50 latency is that of its last this many successful calls."""
THROUGHPUT_WINDOW_S = 300.0
"""Jobs served per minute are counted over this much of the recent past."""
ATTEMPTS_READ = 200
"""The newest attempt rows read to find recent failovers."""
FAILOVERS_SHOWN = 10
MESSAGE_CHARS = 200


def clock(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%H:%M:%S UTC")


def model_badge(report: dict[str, Any], spec: ModelSpec, *, window_s: int, half_open_probes: int,
                breaker_mode: str) -> tuple[str, str]:
    """(colour, reason in words) of one model's badge, from its breaker report and its spec."""
    state, window = report["state"], report["window"]
    colour: str = report["colour"]
    if state == "forced_open":
        return "red", f"forced open by an operator: {report['override_reason'] or 'no reason given'}"
    if report["misconfigured_reason"]:
        return "red", f"misconfigured: {report['misconfigured_reason']}"
    if not spec.configured:
        return "red", f"misconfigured: {spec.missing_key_hint}"
    if state == "open":
        opened = next((t for t in report["last_transitions"] if t["to"] == "open"), None)
        if opened is not None and opened["reason"] == "probe_failed":
            text = "open: a trial call failed while half-open"
        elif opened is not None and opened["reason"] == "slow_call_rate":
            text = (f"open: {opened['slow']} of {opened['calls']} calls were slow in the last "
                    f"{window_s} s")
        else:
            calls, failures = ((opened["calls"], opened["failures"]) if opened is not None
                               else (window["calls"], window["failures"]))
            text = f"open: {failures} of {calls} calls failed in the last {window_s} s"
        if report["open_until_ms"]:
            text += f"; next probe at {clock(report['open_until_ms'])}"
        return "red", text
    if report["cooldown_until_ms"]:
        return "red", f"quota cooldown until {clock(report['cooldown_until_ms'])}"
    if state == "half_open":
        return "yellow", (f"half-open: trying the model again ({report['probes_admitted']} of "
                          f"{half_open_probes} trial calls under way)")
    if state == "disabled":
        return "green", "breaker disabled by an operator: every call goes through, none is judged"
    if report.get("hanging"):
        return "yellow", (f"hanging: {report['slow_running']} of {report['in_flight']} calls in "
                          f"flight running over {2 * spec.baseline_latency_s:g} s with no answer; "
                          "new jobs go to the next model")
    if breaker_mode != "shared":
        return colour, (f"no shared breaker (breaker mode {breaker_mode}): each worker judges "
                        "the model on its own")
    if colour == "yellow":
        return "yellow", (f"slow: {window['slow']} of {window['calls']} calls took over "
                          f"{2 * spec.baseline_latency_s:g} s in the last {window_s} s")
    return colour, "healthy"


def latency_figures(samples: list[telemetry.LatencySample], baseline_s: float) -> dict[str, Any]:
    """p50 of the last ``P50_CALLS`` successful calls (newest first in ``samples``)."""
    ok = [s.latency_s for s in samples if s.ok][:P50_CALLS]
    p50 = round(statistics.median(ok), 3) if ok else None
    return {"p50_latency_s": p50, "p50_calls": len(ok), "baseline_latency_s": baseline_s,
            "p50_vs_baseline": round(p50 / baseline_s, 2) if p50 is not None and baseline_s else None}


def served_per_minute(samples: Iterable[list[telemetry.LatencySample]], now_s: float) -> float:
    """Jobs served per minute over the last ``THROUGHPUT_WINDOW_S``: the models' successful
    calls (a job is served by exactly one). A model whose sample list is full and reaches back
    less far is counted over the span it covers."""
    rate = 0.0
    for rows in samples:
        since_s = now_s - THROUGHPUT_WINDOW_S
        if len(rows) >= telemetry.LATENCY_SAMPLES:
            since_s = max(since_s, rows[-1].at_s)
        served = sum(1 for r in rows if r.ok and r.at_s >= since_s)
        if served:
            rate += served / (max(now_s - since_s, 1.0) / 60.0)
    return round(rate, 1)


def recent_failovers(svc: Services) -> list[dict[str, Any]]:
    """Where jobs went on to another model, and why, among the newest attempt rows: newest
    first, the same hop for the same reason once (``count``: how many times, since ``first_at``). Also
    the status's database check: it raises while the database is unreachable."""
    with svc.sessions() as session:
        rows = session.execute(
            select(Attempt.id, Attempt.job_id, Attempt.model, Attempt.started_at,
                   Attempt.outcome, Attempt.http_status, Attempt.message)
            .order_by(Attempt.id.desc()).limit(ATTEMPTS_READ)).all()
    by_job: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        by_job[row.job_id].append(row)
    found = []
    settled = ("success", AttemptOutcome.IN_PROGRESS.value)
    for attempts in by_job.values():
        attempts.sort(key=lambda r: (r.started_at, r.id))
        for left, right in itertools.pairwise(attempts):
            if left.outcome in settled or right.model == left.model:
                continue
            found.append((int(right.started_at.timestamp() * 1000), left, right))
    found.sort(key=lambda f: f[0], reverse=True)
    grouped: dict[tuple[Any, ...], dict[str, Any]] = {}  # the same hop for the same reason: once
    for at_ms, left, right in found:
        message = (left.message or "")[:MESSAGE_CHARS] or None
        key = (left.model, right.model, left.outcome, left.http_status, message)
        if key in grouped:
            grouped[key]["count"] += 1
            grouped[key]["first_at"] = breakers.iso_ms(at_ms)
            continue
        if len(grouped) == FAILOVERS_SHOWN:
            continue
        grouped[key] = {"from": left.model, "to": right.model, "why": left.outcome,
                        "http_status": left.http_status, "message": message, "count": 1,
                        "at": breakers.iso_ms(at_ms), "at_ms": at_ms,
                        "first_at": breakers.iso_ms(at_ms)}
    return list(grouped.values())


def status_document(svc: Services, open_streams: int) -> dict[str, Any]:
    """The whole status, read now. Raises when Redis or the database is unreachable."""
    settings = svc.settings
    failovers = recent_failovers(svc)
    snap = svc.snapshots.read()
    now_s = time.time()
    workers = heartbeats.roster(svc.redis)
    model_ids = list(svc.catalogue.models)
    reports = breakers.all_reports(svc.breakers, model_ids, TRANSITIONS)
    samples = telemetry.latency_samples(svc.redis, model_ids)
    depth = {lane: svc.queue.index.depth(lane) for lane in ("interactive", "bulk")}
    dispatch_count = svc.queue.index.dispatch_count()
    lanes: dict[str, Any] = {}
    ahead = 0
    for lane in ("interactive", "bulk"):
        ahead += depth[lane]  # a new bulk job waits behind every interactive one
        start, finish = snap.eta(ahead, dispatch_count) if snap else (None, None)
        lanes[lane] = {"depth": depth[lane], "new_job_eta_start_seconds": start,
                       "new_job_eta_finish_seconds": finish}
    models = {}
    for model_id, spec in svc.catalogue.models.items():
        report = reports[model_id]
        figures = snap.data["models"].get(model_id, {}) if snap else {}
        colour, reason = model_badge(report, spec, window_s=settings.breaker_window_s,
                                     half_open_probes=settings.breaker_half_open_probes,
                                     breaker_mode=settings.breaker_mode)
        open_until_ms = report["open_until_ms"]
        models[model_id] = {
            "vendor": spec.vendor, "configured": spec.configured, "keyless": spec.keyless,
            "missing_key_hint": spec.missing_key_hint,
            "health": colour, "reason": reason, "breaker_state": report["state"],
            "window": {**report["window"], "seconds": settings.breaker_window_s},
            "gate_limit": report["gate_limit"], "in_flight": report["in_flight"],
            "slow_running": report["slow_running"], "hanging": report["hanging"],
            **latency_figures(samples.get(model_id, []), spec.baseline_latency_s),
            "median_latency_s": figures.get("median_s"),
            "failure_rate": figures.get("failure_rate"),
            "open_until": report["open_until"], "open_until_ms": open_until_ms,
            "next_probe_in_seconds": (None if open_until_ms is None
                                      else round(max(0.0, open_until_ms / 1000 - now_s), 1)),
            "cooldown_until": report["cooldown_until"],
            "cooldown_until_ms": report["cooldown_until_ms"],
            "last_transitions": [{k: t[k] for k in ("from", "to", "reason", "calls", "failures",
                                                    "slow", "at", "at_ms")}
                                 for t in report["last_transitions"]],
        }
    return {
        "generated_at": breakers.iso_ms(int(now_s * 1000)), "generated_at_ms": int(now_s * 1000),
        "lanes": lanes,
        "workers": {"alive": len(workers),
                    "slots": sum(0 if w["draining"] else w["concurrency"] for w in workers),
                    "draining": sum(1 for w in workers if w["draining"]),
                    "nodes": [{**w, "started_at": breakers.iso_ms(w["started_at_ms"])} for w in workers]},
        "running": len(snap.data["running"]) if snap else 0,
        "throughput": {"jobs_per_minute": served_per_minute(samples.values(), now_s),
                       "over_seconds": THROUGHPUT_WINDOW_S},
        "models": models,
        "recent_failovers": failovers,
        "breaker_mode": settings.breaker_mode,
        "snapshot_age_seconds": round(snap.age_s, 2) if snap else None,
        "open_event_streams": open_streams,
    }


class StatusFeed:
    """One status document shared by all of a process's status streams.

    A stream asks for the document after each published snapshot (``heard``: the listener's
    count of them) or after its fallback period; the first to ask builds it (in a thread) and
    every other stream woken by the same snapshot gets that one, so the database and Redis are
    read once per snapshot whatever the number of clients. While no snapshot comes, a document
    younger than ``max_age_s`` is reused. A failed build fails every stream waiting on it."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build
        self.builds = 0
        self._text: str | None = None
        self._heard = -1
        self._built_at = 0.0
        self._pending: asyncio.Future[str] | None = None
        self._pending_heard = -1
        self._pending_at = 0.0

    async def document(self, heard: int, max_age_s: float) -> str:
        """The status as JSON text, built after the ``heard``-th snapshot was announced and
        no more than ``max_age_s`` before this call."""
        oldest = time.monotonic() - max_age_s
        if self._text is not None and self._heard >= heard and self._built_at >= oldest:
            return self._text
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._run(heard))
                self._pending.add_done_callback(_retrieve)
                self._pending_heard, self._pending_at = heard, time.monotonic()
            pending, its_heard, its_start = self._pending, self._pending_heard, self._pending_at
            text = await asyncio.shield(pending)  # a client leaving cancels only its own wait
            if its_heard >= heard and its_start >= oldest:
                return text
            # That build began before the snapshot this client was woken by: one more.

    async def _run(self, heard: int) -> str:
        started = time.monotonic()
        try:
            text = json.dumps(await run_in_threadpool(self._build))
            self.builds += 1
            self._text, self._heard, self._built_at = text, heard, started
            return text
        finally:
            self._pending = None


def _retrieve(future: asyncio.Future[str]) -> None:
    """Mark a failed build's error as seen even if every stream waiting on it has left."""
    if not future.cancelled():
        future.exception()
