"""How accurate is the ETA a job is given at submit time? Measured on the real stack.

The stack: a private redis-server, a PostgreSQL database, the vendor simulator (latencies lognormal
per model, from its ``peak-hours`` figures, scaled down by ``--latency-scale``, default 0.2: a
model with a 12 s median answers in 2.4 s), the API (uvicorn), the scheduler (dispatcher + snapshot
publisher) and 2 Celery worker processes. Every time constant of the stack is scaled like the
latencies (``scaled_settings``). Every job takes the default route (gemini-3-pro-image-preview,
then gemini-2.5-flash-image, ...).

Scenarios: a steady heavy load (Poisson arrivals at ~0.9 utilisation) and a 500-job burst, each
under three conditions: ``healthy`` (peak-hours latencies, no errors), ``peak-hours`` (the first
model answers ~45 % of calls with a fast 503) and ``outage`` (peak-hours, then a 100 % 503 outage of
the first model starting half-way through the run). Plus a light load (healthy, no goal).

Each scenario starts without the state of the one before (breakers closed, failure rates and
vendor-limit state gone, a new scheduler process), but with the latency history of a deployment
that has served its models before: before the first scenario every model of the route is primed,
``PRIME_CALLS`` jobs pinned to each of the two models that serve nearly every job and
``PRIME_DEEP_CALLS`` to each one further down, under the healthy profile, on primer workers
without vendor limits (``Bench.prime``); the latency lists are put back to that state before each
scenario (``--no-prime`` shows the cold case). Priming jobs are not scored and are not in Gradio's
history (another route). Then a warm-up burst of ``10 x slots`` default-route jobs under the
scenario's profile, so that the publisher has current failure rates and Gradio's running mean a
value; warm-up jobs are not scored, but count in Gradio's running mean.

The steady load runs for 1800 s x latency scale (360 s at 0.2). Its arrival rate is set from the
mean slot time of an unscored calibration stretch of the same load (``Bench.steady_rate``), and
the share of slot time that was busy is printed.

Scored per job: the ETA in the submit response (start and finish, seconds from then) against the
job's ``started_at`` / ``finished_at``. ETA-to-start is scored only for jobs that waited at least
5 s x latency scale. Gradio's estimate is replayed on the same run (see ``eta_scoring.gradio_at``).
docs/benchmarks.md has the figures, and why the benchmark is set up this way.

    python -m benchmarks.eta_accuracy                      # everything, about 40 minutes
    python -m benchmarks.eta_accuracy --only burst-healthy steady-outage
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy
from sqlalchemy import select

from benchmarks import eta_scoring as scoring
from cli.lab.stack import RunningStack, fast_catalogue, start_stack
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http
from providers.catalogue import DEFAULT_CATALOGUE_PATH, load_catalogue
from simulator.catalogue import write_simulator_catalogue
from simulator.profile import BUILTIN_PROFILES
from storage.db import drop_schema, migrate

FIRST_MODEL = "gemini-3-pro-image-preview"
BURST_JOBS = 500
PRIME_CALLS = 1000  # each of the route's first PRIME_DEEP_FROM models, which serve nearly all jobs
PRIME_DEEP_CALLS = 200  # each model further down
PRIME_DEEP_FROM = 2
PRIMER_WORKERS, PRIMER_CONCURRENCY = 2, 16
WARM_UP_PER_SLOT = 10
MIN_WAIT_UNSCALED_S = 5.0
CALIBRATION_UNSCALED_S = 600.0  # a steady load's unscored first stretch, which sets its rate
DRAIN_TIMEOUT_S = 300.0
LATENCY_KEYS = "imgq:v1:latency:*"


@dataclass(frozen=True)
class Scenario:
    name: str
    load: str  # "steady", "burst" or "light"
    condition: str  # "healthy", "peak-hours" or "outage"

    @property
    def goal(self) -> scoring.Goal:
        return {"burst": scoring.BURST_GOAL, "steady": scoring.STEADY_GOAL}.get(
            self.load, scoring.NO_GOAL)


SCENARIOS = [Scenario(f"{load}-{condition}", load, condition)
             for load in ("steady", "burst") for condition in ("healthy", "peak-hours", "outage")]
SCENARIOS.append(Scenario("light-healthy", "light", "healthy"))


def simulator_profile(condition: str, latency_scale: float) -> dict[str, Any]:
    """peak-hours as built in; healthy = the same latencies without errors."""
    models = {name: dict(entry) for name, entry in BUILTIN_PROFILES["peak-hours"]["models"].items()}
    if condition == "healthy":
        models = {name: {**entry, "errors": {}} for name, entry in models.items()}
    return {"name": f"eta-{condition}", "latency_scale": latency_scale, "models": models}


class Bench:
    def __init__(self, stack: RunningStack, api_key: str, simulator_url: str,
                 redis_url: str, database_url: str, latency_scale: float,
                 concurrency: int) -> None:
        self.stack = stack
        self.http = stack.client(api_key)
        self.sim = httpx.Client(base_url=simulator_url, timeout=10)
        self.redis = redis.Redis.from_url(redis_url)
        self.engine = sqlalchemy.create_engine(database_url)
        self.latency_scale = latency_scale
        self.concurrency = concurrency
        self.slots = int(self.http.get("/v1/status").json()["workers"]["slots"])
        self.seq = 0
        self.dump_dir: Path | None = None
        self.primed: dict[bytes, Any] = {}
        self.calibration: list[str] = []  # ids of the steady load's calibration jobs
        self.steady_service_s: float | None = None

    def submit(self, model: str | None = None) -> dict[str, Any]:
        self.seq += 1
        body: dict[str, Any] = {"prompt": f"a lighthouse at dawn, study {self.seq}",
                                "size": "1024x1024"}
        if model is not None:
            body["model"] = model
        response = self.http.post("/v1/jobs", json=body)
        returned_s = time.time()
        response.raise_for_status()
        job = response.json()
        return {"id": job["id"], "submitted_s": returned_s, "position": job["queue_position"],
                "eta_start_s": job["eta_start_seconds"], "eta_finish_s": job["eta_finish_seconds"],
                "status": job["status"]}

    def submit_many(self, count: int, clients: int = 4,
                    models: list[str | None] | None = None) -> list[dict[str, Any]]:
        chosen = models or [None] * count
        with ThreadPoolExecutor(clients) as pool:
            return list(pool.map(self.submit, chosen))

    def prime(self, route: list[str], primer_catalogue: Path) -> None:
        """``PRIME_CALLS`` jobs pinned to each of the route's first ``PRIME_DEEP_FROM`` models and
        ``PRIME_DEEP_CALLS`` to each one further down, healthy, waited for; their latency samples
        are what ``forget_history`` puts back.

        They run on primer workers (``PRIMER_WORKERS x PRIMER_CONCURRENCY`` threads, a catalogue
        without vendor limits), so that a thousand calls to a model limited to 20 a window take
        a minute, not ten: the simulator's latencies do not depend on how many calls are in
        flight. The scenario workers are stopped meanwhile and started again afterwards."""
        self.set_condition("healthy")
        workers = [name for name in self.stack.procs if name.startswith("worker")]
        for name in workers:
            self.stack.stop(name)
        pointed = write_simulator_catalogue(str(self.sim.base_url), primer_catalogue.with_suffix(
            ".json"), source=primer_catalogue)  # models without a key call the simulator
        env = {**self.stack.env, "IMGQ_CATALOGUE_PATH": str(pointed)}
        primers = [f"primer{k + 1}" for k in range(PRIMER_WORKERS)]
        for name in primers:
            self.stack.start_worker(name, PRIMER_CONCURRENCY, env=env)
        counts = {m: PRIME_CALLS if i < PRIME_DEEP_FROM else PRIME_DEEP_CALLS
                  for i, m in enumerate(route)}
        models: list[str | None] = [m for n in range(PRIME_CALLS) for m in route
                                    if n < counts[m]]
        self.times([j["id"] for j in self.submit_many(len(models), models=models)],
                   timeout_s=3 * DRAIN_TIMEOUT_S)
        for name in primers:
            self.stack.stop(name)
        for name in workers:
            self.stack.start_worker(name, self.concurrency)
        self.wait_slots(len(workers) * self.concurrency)
        self.primed = {key: value for key in self.redis.scan_iter(LATENCY_KEYS)
                       if (value := self.redis.dump(key)) is not None}

    def wait_slots(self, slots: int, timeout_s: float = 60.0) -> None:
        """Until /v1/status counts exactly ``slots`` (the primers' heartbeats have expired)."""
        deadline = time.monotonic() + timeout_s
        while int(self.http.get("/v1/status").json()["workers"]["slots"]) != slots:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not come back to {slots} slots")
            time.sleep(0.5)

    def finished(self, job_ids: list[str]) -> list[Any]:
        """Rows (id, started_at, finished_at) of those of the given jobs that are terminal now."""
        from storage.models import Job

        with self.engine.connect() as conn:
            return list(conn.execute(select(Job.id, Job.started_at, Job.finished_at).where(
                Job.id.in_(job_ids), Job.finished_at.is_not(None))).all())

    def times(self, job_ids: list[str], timeout_s: float = DRAIN_TIMEOUT_S
              ) -> dict[str, tuple[float, float]]:
        """(started_s, finished_s) epoch seconds of the given jobs, once all are terminal."""
        deadline = time.monotonic() + timeout_s
        wanted = list(set(job_ids))
        while True:
            rows = self.finished(wanted)
            if len(rows) == len(wanted):
                return {r.id: (_epoch(r.started_at or r.finished_at), _epoch(r.finished_at))
                        for r in rows}
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(wanted) - len(rows)} jobs did not finish in time")
            time.sleep(0.5)

    def set_condition(self, condition: str) -> None:
        profile = simulator_profile(condition, self.latency_scale)
        self.sim.put("/_sim/profile", json=profile).raise_for_status()

    def start_outage(self) -> None:
        self.sim.post("/_sim/outage", json={"model": FIRST_MODEL, "start_s": 0, "end_s": 3600,
                                            "kind": "overloaded", "rate": 1.0}).raise_for_status()

    def forget_history(self) -> None:
        """A fresh start: every breaker closed, no vendor-limit state, latency lists as primed
        (empty without priming) and a new scheduler process (its measured slot overhead is in
        memory), so that each scenario is its own run."""
        self.stack.stop("scheduler")
        for pattern in (LATENCY_KEYS, "imgq:v1:breaker*", "imgq:v1:limits*"):
            for key in self.redis.scan_iter(pattern):
                self.redis.delete(key)
        for key, value in self.primed.items():
            self.redis.restore(key, 0, value, replace=True)
        self.stack.start_scheduler()

    def run(self, scenario: Scenario, duration_s: float, calibration_s: float) -> str:
        self.set_condition(scenario.condition)
        self.calibration, self.steady_service_s = [], None
        self.forget_history()
        warm = self.submit_many(WARM_UP_PER_SLOT * self.slots)
        warm_times = self.times([j["id"] for j in warm])
        mean_service_s = sum(f - s for s, f in warm_times.values()) / len(warm_times)
        time.sleep(1.5)  # one fresh snapshot after the last warm-up job
        outage_at_s: float | None = None
        started = time.monotonic()
        snapshots: list[dict[str, Any]] = []
        sampling = threading.Event()
        if self.dump_dir is not None:
            threading.Thread(target=self.sample_snapshots, args=(snapshots, sampling),
                             daemon=True).start()
        if scenario.load == "burst":
            drain_s = BURST_JOBS * mean_service_s / self.slots
            if scenario.condition == "outage":
                outage_at_s = drain_s / 2
                threading.Timer(outage_at_s, self.start_outage).start()
            jobs = self.submit_many(BURST_JOBS)
        else:
            utilisation = 0.9 if scenario.load == "steady" else 0.3
            rate_per_s = utilisation * self.slots / mean_service_s
            if scenario.load == "steady":
                rate_per_s = self.steady_rate(rate_per_s, utilisation, calibration_s)
                started = time.monotonic()
            if scenario.condition == "outage":
                outage_at_s = duration_s / 2
                threading.Timer(outage_at_s, self.start_outage).start()
            jobs = self.poisson(rate_per_s, duration_s)
        job_times = self.times([j["id"] for j in jobs])
        warm_times.update(self.times(list(self.calibration)))
        sampling.set()
        if self.dump_dir is not None:
            (self.dump_dir / f"{scenario.name}.json").write_text(json.dumps(
                {"jobs": jobs, "times": job_times, "warm": warm_times, "snapshots": snapshots}))
        elapsed_s = time.monotonic() - started
        return self.report(scenario, warm_times, jobs, job_times, mean_service_s, elapsed_s,
                           outage_at_s)

    def steady_rate(self, rate_per_s: float, utilisation: float, calibration_s: float) -> float:
        """The arrival rate that loads the slots to ``utilisation``, from the mean slot time of
        the jobs of an unscored calibration stretch of the same load (in Gradio's history).

        The warm-up burst's mean is not it: in a burst the first model's rate budget is spent
        in seconds and most jobs take the faster second model, while a steady load keeps
        sending it its full budget. Nor is the whole stretch's: it starts with that budget
        still spent by the warm-up. So only jobs started from 40 % into it count, and only up
        to 90 %, by when all of them have finished (the slow ones too)."""
        begin_s = time.time()
        self.calibration = [j["id"] for j in self.poisson(rate_per_s, calibration_s, seed=8)]
        counted = (begin_s + 0.4 * calibration_s, begin_s + 0.9 * calibration_s)
        slot_s = [_epoch(r.finished_at) - _epoch(r.started_at)
                  for r in self.finished(self.calibration)
                  if r.started_at is not None and counted[0] <= _epoch(r.started_at) < counted[1]]
        self.steady_service_s = sum(slot_s) / len(slot_s)
        return utilisation * self.slots / self.steady_service_s

    def sample_snapshots(self, into: list[dict[str, Any]], done: threading.Event) -> None:
        while not done.wait(0.5):
            raw = self.redis.get("imgq:v1:snapshot")
            if raw is not None:
                snap = json.loads(raw)
                curve = snap.pop("curve")
                snap["curve_head"] = {k: curve[k] for k in ("mean_service_s", "queue_depth")}
                snap["start_ms"] = curve["start_ms"][:: 20]
                snap["inflight"] = self.redis.zcard("imgq:v1:inflight")
                into.append(snap)

    def poisson(self, rate_per_s: float, duration_s: float, seed: int = 7
                ) -> list[dict[str, Any]]:
        """Submits as a Poisson process of ``rate_per_s`` conditioned on its expected count:
        that many arrival times, uniform over ``duration_s`` and sorted. Unconditioned, one
        360 s run came out 3 % over its rate, which moved a 0.9 load to 0.95."""
        rng = random.Random(seed)
        arrivals_s = sorted(rng.uniform(0.0, duration_s)
                            for _ in range(round(rate_per_s * duration_s)))
        jobs = []
        begin = time.monotonic()
        for at_s in arrivals_s:
            time.sleep(max(0.0, begin + at_s - time.monotonic()))
            jobs.append(self.submit())
        return jobs

    def report(self, scenario: Scenario, warm_times: dict[str, tuple[float, float]],
               jobs: list[dict[str, Any]], job_times: dict[str, tuple[float, float]],
               mean_service_s: float, elapsed_s: float, outage_at_s: float | None) -> str:
        scored = [scoring.Submitted(j["id"], j["submitted_s"], j["position"] or 0,
                                    j["eta_start_s"], j["eta_finish_s"], *job_times[j["id"]])
                  for j in jobs if j["eta_start_s"] is not None]
        history = [scoring.Served(s, f) for s, f in [*warm_times.values(), *job_times.values()]]
        min_wait_s = MIN_WAIT_UNSCALED_S * self.latency_scale
        ours = scoring.summarise("model-aware", scoring.errors(
            scored, [(j.eta_start_s, j.eta_finish_s) for j in scored], min_wait_s))
        gradio = scoring.summarise("gradio", scoring.errors(
            scored, [scoring.gradio_at(j, history, self.slots, mean_service_s) for j in scored],
            min_wait_s))
        waits = sorted(j.actual_start_s for j in scored)
        submits = [j.submitted_s for j in scored]
        busy = scoring.busy_share(history, min(submits), max(submits), self.slots)
        outage = (f", outage of {FIRST_MODEL} from t={outage_at_s:.1f}s"
                  if outage_at_s is not None else "")
        calibrated = ("" if self.steady_service_s is None else
                      f" (steady load's {self.steady_service_s:.2f}s sets its rate)")
        title = (f"== {scenario.name}: {len(jobs)} jobs ({len(jobs) - len(scored)} without ETA), "
                 f"{self.slots} slots, warm-up mean service {mean_service_s:.2f}s{calibrated}, "
                 f"median wait {scoring.quantile(waits, 0.5):.2f}s, slots busy {100 * busy:.0f} % while jobs "
                 f"arrived, run {elapsed_s:.0f}s{outage}")
        return scoring.table(title, [ours, gradio], scoring.verdicts(ours, gradio, scenario.goal))


def _epoch(moment: datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def scaled_settings(work: Path, latency_scale: float) -> dict[str, str]:
    """Every time constant of the stack scaled like the simulator's latencies, as environment.

    The vendors' requests-per-minute limits (as a shorter rate window, so bursts scale too), the
    breaker's window and open period, the snapshot period: left at their real values, a 10x
    faster simulator would meet 10x tighter rate limits, a breaker that stays open for the whole
    run and snapshots ten times staler, which is not the system the unscaled figures describe.
    """
    return {"IMGQ_CATALOGUE_PATH": str(scaled_catalogue(work, latency_scale)),
            "IMGQ_SNAPSHOT_INTERVAL_S": str(1.0 * latency_scale),
            "IMGQ_VENDOR_RATE_WINDOW_S": str(60 * latency_scale),
            "IMGQ_VENDOR_SLOT_WAIT_S": str(2.0 * latency_scale),
            "IMGQ_BREAKER_WINDOW_S": str(max(1, round(60 * latency_scale))),
            "IMGQ_BREAKER_OPEN_DURATION_S": str(300 * latency_scale)}


def scaled_catalogue(work: Path, latency_scale: float) -> Path:
    """The shipped catalogue (its limits as they are) with baseline latencies scaled like the
    simulator's: a model no job has reached yet is forecast at its baseline, and an unscaled one
    would be 10x too slow."""
    text = re.sub(r"(?m)^(baseline_latency_s\s*=\s*)([0-9.]+)",
                  lambda m: f"{m.group(1)}{float(m.group(2)) * latency_scale:g}",
                  DEFAULT_CATALOGUE_PATH.read_text(encoding="utf-8"))
    path = work / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def prepare_database(url: str | None) -> str:
    """A freshly migrated database: the given URL, or a private PostgreSQL database."""
    if url is None:
        admin = sqlalchemy.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test",
                                         isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(sqlalchemy.text(
                "SELECT 1 FROM pg_database WHERE datname = 'imgq_eta_bench'")).first()
            if not exists:
                conn.execute(sqlalchemy.text("CREATE DATABASE imgq_eta_bench"))
        admin.dispose()
        url = "postgresql+psycopg://postgres@127.0.0.1:5432/imgq_eta_bench"
    if url.startswith("postgresql"):
        drop_schema(url)
    migrate(url)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-scale", type=float, default=0.2,
                        help="simulator latencies and the stack's time constants x this")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker (2 workers)")
    parser.add_argument("--steady-s", type=float, default=None,
                        help="arrival window of the steady load (default 1800 s x latency scale)")
    parser.add_argument("--database-url", default=None,
                        help="default: a private PostgreSQL database at 127.0.0.1:5432")
    parser.add_argument("--dump-dir", type=Path, default=None,
                        help="write each scenario's jobs and timestamps here as JSON")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to run")
    parser.add_argument("--no-prime", action="store_true",
                        help="no priming: models the warm-up does not reach start at the "
                             "catalogue's baseline latency")
    args = parser.parse_args()
    chosen = [s for s in SCENARIOS if args.only is None or s.name in args.only]
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="imgq-eta-") as tmp:
        work = Path(tmp)
        procs = []
        sim_port = free_port()
        redis_server = RedisServer(work / "redis.log").start()
        redis_url = redis_server.url
        simulator_url = f"http://127.0.0.1:{sim_port}"
        procs.append(spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1",
                            "--port", str(sim_port), "--profile", "peak-hours", "--seed", "11"],
                           log=work / "simulator.log"))
        stack = None
        try:
            wait_http(f"{simulator_url}/_sim/health", proc=procs[-1])
            database_url = prepare_database(args.database_url)
            stack = start_stack(work, database_url=database_url, redis_url=redis_url,
                                simulator_url=simulator_url, image_dir=work / "images",
                                extra_env=scaled_settings(work, args.latency_scale),
                                workers=2, concurrency=args.concurrency)
            bench = Bench(stack, stack.new_tenant("eta-bench"), simulator_url, redis_url,
                          database_url, args.latency_scale, args.concurrency)
            bench.dump_dir = args.dump_dir
            if not args.no_prime:
                bench.prime(list(load_catalogue().routes["default"].models),
                            fast_catalogue(work, cap=64, name="primer-catalogue.toml",
                                           source=scaled_catalogue(work, args.latency_scale)))
            primed = (f"primed ({PRIME_CALLS} calls each of the first {PRIME_DEEP_FROM}, "
                      f"{PRIME_DEEP_CALLS} each of the rest)")
            print(f"ETA accuracy on the real stack: 2 worker processes x {args.concurrency} "
                  f"threads = {bench.slots} slots; simulator latencies x {args.latency_scale} "
                  f"(lognormal per model, peak-hours medians; vendor rate windows, breaker "
                  f"window/open period and snapshot period scaled alike); models "
                  f"{primed if bench.primed else 'not primed'}, warm-up "
                  f"{WARM_UP_PER_SLOT} jobs per slot; start scored for waits >= "
                  f"{MIN_WAIT_UNSCALED_S * args.latency_scale:.2f}s; errors are |ETA - actual| "
                  f"in s and % of actual\n", flush=True)
            steady_s = args.steady_s or 1800 * args.latency_scale
            for scenario in chosen:
                duration_s = steady_s if scenario.load != "light" else steady_s / 2
                print(bench.run(scenario, duration_s, CALIBRATION_UNSCALED_S * args.latency_scale),
                      "\n", flush=True)
        finally:
            if stack is not None:
                stack.stop_all()
            for proc in reversed(procs):
                stop_process(proc)
            redis_server.stop()
    print(f"total runtime {time.monotonic() - begin:.0f}s")


if __name__ == "__main__":
    main()
