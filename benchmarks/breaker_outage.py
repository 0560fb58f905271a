"""Outage benchmark: what a failing model costs imagequeue's breaker designs and LiteLLM's Router,
side by side, in three faults and a healthy start.

    python -m benchmarks.breaker_outage [--scenarios a,b,c,healthy] [--designs gated,shared,...]
                                        [--database-url postgresql+psycopg://...]

Designs: ``gated`` (shared breaker, slow-start gate on: IMGQ_BREAKER_GATE=true), ``shared`` (gate
off), ``local`` (one breaker per worker process), ``off`` (no breaker), and LiteLLM's Router
(``litellm``, ``litellm+redis`` with its Redis cache) if installed: ``pip install -e '.[bench]'``.
Each imagequeue run starts the real stack (API, dispatcher, P Celery worker processes x 4
threads); LiteLLM runs as P processes x 4 threads calling ``router.image_generation``, its
deployments ``openai/<model>`` on the simulator's OpenAI-compatible aggregator, falling back
along imagequeue's default route. Both face the same fault on gemini-3-pro-image-preview (the
head of the route) in the same simulator process; the calls to it are counted from the
simulator's call log. Breaker: window 10 s, minimum 4 calls, open 10 s, 2 probes; LiteLLM:
allowed_fails=3, cooldown_time=10, num_retries=0. Every model answers in about 0.15 s.

Scenarios: (a) the first model 100 % 503 from the start, a burst of 50 jobs per process, P = 1,
2, 4; (b) healthy 5 s, then 100 % 503 for 30 s, then healthy, jobs at 8/s for 45 s: seconds from recovery
until the first model serves >= 90 % of the jobs submitted in each second from then on;
(c) the first model hangs (accepts, never answers; call timeout 10 s) for 30 s, jobs at 4/s:
slot-seconds held by calls to it (4/s for 30 s); (healthy) no fault, every model 1 s (long beside the
stack's own cost per job, so the ramp is the gate's), a burst: seconds until 16 calls are in
flight at the simulator at once, and that in model latencies. Everything is on loopback: a
private redis-server, the simulator and the stack are started here and stopped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import breaker_latency
from benchmarks.outage import imagequeue_run, litellm_run, sim, table
from benchmarks.outage.plan import BAD_MODEL, DESIGNS, SCENARIOS, Design, Scenario, wire_names
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--scenarios", default="a,b,c,healthy",
                        help=f"comma-separated, of {','.join(SCENARIOS)}")
    parser.add_argument("--designs", default=",".join(DESIGNS),
                        help=f"comma-separated, of {','.join(DESIGNS)}")
    parser.add_argument("--database-url", default="sqlite:///", help="default: SQLite files")
    parser.add_argument("--burst", type=int, default=None,
                        help="jobs per process in a burst (default 50)")
    parser.add_argument("--processes", default=None,
                        help="worker processes for scenario a, comma-separated (default 1,2,4)")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the breaker store latency table at the end")
    args = parser.parse_args(argv)
    for name, known in (("scenarios", SCENARIOS), ("designs", DESIGNS)):
        unknown = set(getattr(args, name).split(",")) - set(known)
        if unknown:
            parser.error(f"--{name}: unknown {sorted(unknown)}; known {list(known)}")
    return args


def scenario_as_asked(name: str, args: argparse.Namespace) -> Scenario:
    scenario = SCENARIOS[name]
    if args.burst and scenario.burst_per_process:
        scenario = dataclasses.replace(scenario, burst_per_process=args.burst)
    if args.processes and name == "a":
        scenario = dataclasses.replace(
            scenario, processes=tuple(int(p) for p in args.processes.split(",")))
    return scenario


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    began = time.monotonic()
    designs = [DESIGNS[d] for d in args.designs.split(",")]
    if any(d.is_litellm for d in designs) and not litellm_run.available():
        print(f"LiteLLM is not installed: its rows are skipped ({litellm_run.INSTALL_HINT})")
        designs = [d for d in designs if not d.is_litellm]
    bad_names = {BAD_MODEL, wire_names()[BAD_MODEL]}
    print("gated and shared differ only by IMGQ_BREAKER_GATE (true / false); "
          "bad calls: calls to the bad model that met its fault, from the simulator's log")
    with tempfile.TemporaryDirectory(prefix="imgq-outage-") as tmp:
        work = Path(tmp)
        redis_server = RedisServer(work / "redis.log").start()
        sim_port = free_port()
        simulator = spawn([sys.executable, "-m", "simulator", "--host", "127.0.0.1",
                           "--port", str(sim_port), "--profile", "healthy"],
                          log=work / "simulator.log")
        simulator_url = f"http://127.0.0.1:{sim_port}"
        try:
            wait_http(f"{simulator_url}/_sim/health", proc=simulator)
            for name in args.scenarios.split(","):
                scenario = scenario_as_asked(name, args)
                print(f"\n({scenario.name}) {scenario.describe()}")
                print(table.header(scenario), flush=True)
                for processes in scenario.processes:
                    for design in designs:
                        if scenario.only and design.name not in scenario.only:
                            continue
                        print(run_one(design, scenario, processes, work, args.database_url,
                                      redis_server, simulator_url, bad_names).line(),
                              flush=True)
            if not args.no_latency:
                print()
                breaker_latency.main(["--redis-url", redis_server.url, "--iterations", "3000"])
        finally:
            stop_process(simulator)
            redis_server.stop()
    print(f"\ntotal wall time {time.monotonic() - began:.0f} s")


def run_one(design: Design, scenario: Scenario, processes: int, work: Path, database_url: str,
            redis_server: RedisServer, simulator_url: str, bad_names: set[str]) -> table.Row:
    if design.is_litellm:
        jobs, started_s = litellm_run.run(design, scenario, processes, work, redis_server.url,
                                          redis_server.port, simulator_url, bad_names)
    else:
        jobs, started_s = imagequeue_run.run(design, scenario, processes, work, database_url,
                                             redis_server.url, simulator_url, bad_names)
    return table.row(design.name, scenario, processes, jobs, sim.calls_to(simulator_url, bad_names),
                     sim.all_calls(simulator_url), started_s)


if __name__ == "__main__":
    main()
