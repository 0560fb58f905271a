"""The whole stack as real processes, for the test suite and the benchmarks to drive: the API
(uvicorn), Celery worker processes and the scheduler, each its own process, talking to real Redis,
a real database and the vendor simulator, with short time constants (dispatch every 0.2 s,
worker heartbeats every 0.5 s) so that what they wait for happens quickly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from celery.utils.nodenames import host_format

from cli.lab.broker import Backlog
from cli.stack import free_port, spawn, stop_process, wait_http, wait_until
from imagequeue import keys
from providers.catalogue import DEFAULT_CATALOGUE_PATH
from simulator.catalogue import write_simulator_catalogue
from storage.models import TERMINAL_STATUSES


def fast_catalogue(directory: Path, *, cap: int | None = None, rpm: int = 60_000,
                   name: str = "catalogue.toml", source: Path = DEFAULT_CATALOGUE_PATH) -> Path:
    """The shipped catalogue (or ``source``) with a rate limit high enough not to slow tests down
    (and, if given, every model capped at ``cap`` concurrent calls)."""
    text = source.read_text(encoding="utf-8")
    if cap is not None:
        text = re.sub(r"(?m)^max_concurrency = \d+", f"max_concurrency = {cap}", text)
    text = re.sub(r"(?m)^requests_per_minute = \d+", f"requests_per_minute = {rpm}", text)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def sim_profile(simulator_url: str, *, outage_on: str | None) -> None:
    """Every model of the simulator answers in about 0.15 s; ``outage_on`` (a model), if given,
    answers every call with a 503 "overloaded"."""
    models: dict[str, Any] = {"default": {"latency": {"median_s": 0.15, "sigma": 0.1}}}
    if outage_on is not None:
        models[outage_on] = {"latency": {"median_s": 0.15, "sigma": 0.1}, "outages": [
            {"start_s": 0, "end_s": 3600, "kind": "overloaded", "rate": 1.0}]}
    httpx.put(f"{simulator_url}/_sim/profile", json={"models": models},
              timeout=5).raise_for_status()


def sim_calls(simulator_url: str, model: str) -> list[dict[str, Any]]:
    """The simulator's call log for ``model``: every call that reached it, oldest first."""
    calls = httpx.get(f"{simulator_url}/_sim/calls", params={"model": model}, timeout=5)
    return list(calls.json()["calls"])


def wait_jobs(client: httpx.Client, job_ids: Sequence[str], timeout_s: float = 60.0,
              poll_s: float = 0.1) -> dict[str, dict[str, Any]]:
    """Each of the jobs as the API shows it once it has ended, by id (``client``: a tenant's)."""
    done: dict[str, dict[str, Any]] = {}

    def all_ended() -> bool:
        for job_id in job_ids:
            if job_id not in done:
                job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in TERMINAL_STATUSES:
                    done[job_id] = job
        return len(done) == len(job_ids)

    wait_until(all_ended, f"all {len(job_ids)} jobs end", timeout_s, poll_s)
    return done


@dataclass
class RunningStack:
    api_url: str
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics: bool = False  # each worker and the scheduler serve /metrics on a port of its own
    metrics_urls: dict[str, str] = field(default_factory=dict)  # by process name, with the API's
    worker_nodes: dict[str, str] = field(default_factory=dict)  # process name -> Celery node

    def start_worker(self, name: str, concurrency: int = 4,
                     env: dict[str, str] | None = None, hostname: str | None = None) -> None:
        """A Celery worker process; ``env`` (default: the stack's) e.g. with another catalogue.
        ``hostname``: the process runs in a UTS namespace of its own under that host name, as on
        another host (``unshare --uts``; needs root, see ``can_fake_hostnames``)."""
        self.worker_nodes[name] = f"{name}@{hostname}" if hostname else host_format(f"{name}@%h")
        command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "imgq",
                   "-P", "threads", "-c", str(concurrency), "-n", self.worker_nodes[name],
                   "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                   "--without-heartbeat"]
        if hostname:
            command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname,
                       *command]
        self.procs[name] = spawn(
            command,
            env=self._metrics_env(name, "IMGQ_WORKER_METRICS_PORT", env or self.env),
            log=self.log_dir / f"{name}.log")

    def start_api(self, workers: int = 1) -> None:
        """The API on the stack's port (``workers``: processes, as ``imgq api --workers``);
        returns once it answers."""
        port = self.api_url.rsplit(":", 1)[1]
        self.procs["api"] = spawn(
            [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1", "--port",
             port, "--log-level", "warning", "--workers", str(workers)],
            env=self.env, log=self.log_dir / "api.log")
        wait_http(f"{self.api_url}/healthz", proc=self.procs["api"])

    def start_scheduler(self, name: str = "scheduler") -> None:
        self.procs[name] = spawn(
            [sys.executable, "-m", "cli", "scheduler"],
            env=self._metrics_env(name, "IMGQ_SCHEDULER_METRICS_PORT", self.env),
            log=self.log_dir / f"{name}.log")

    def _metrics_env(self, name: str, setting: str, env: dict[str, str]) -> dict[str, str]:
        """``env`` with a free metrics port for process ``name`` when the stack serves metrics."""
        if not self.metrics:
            return env
        port = free_port()
        self.metrics_urls[name] = f"http://127.0.0.1:{port}"
        return {**env, setting: str(port)}

    def wait_metrics(self, timeout_s: float = 30.0) -> None:
        """Until every process's metrics port answers ``/healthz``."""
        for name, url in self.metrics_urls.items():
            wait_http(f"{url}/healthz", timeout_s, proc=self.procs.get(name))

    def stop(self, name: str) -> None:
        stop_process(self.procs.pop(name))

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.log_dir.glob("*.log"))

    def new_tenant(self, name: str, *limits: str) -> str:
        """Create a tenant the way an operator does, with the CLI (``limits``: its options such
        as ``--max-running 1``); returns its API key."""
        out = subprocess.run([sys.executable, "-m", "cli", "tenant", "create", name, *limits],
                             env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1]

    def client(self, api_key: str) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30,
                            headers={"Authorization": f"Bearer {api_key}"})

    @property
    def broker_url(self) -> str:
        """The Celery broker: IMGQ_BROKER_URL (RabbitMQ) if given, else the stack's Redis."""
        return self.env.get("IMGQ_BROKER_URL") or self.env["IMGQ_REDIS_URL"]

    def redis_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.env["IMGQ_REDIS_URL"])

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> None:
        """Until ``count`` workers have registered their heartbeats."""
        client = self.redis_client()
        try:
            wait_until(lambda: client.hlen(keys.WORKERS) >= count,
                       f"{count} workers register", timeout_s, poll_s=0.1)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}:\n{self.logs()}") from None
        finally:
            client.close()

    def wait_snapshot(self, after_s: float | None = None,
                      timeout_s: float = 30.0) -> dict[str, Any]:
        """The first snapshot the scheduler publishes that is newer than ``after_s`` (epoch
        seconds; default: now): one that read the queue, the workers and the latencies after
        that moment."""
        since_s = time.time() if after_s is None else after_s
        client = self.redis_client()

        def newer() -> dict[str, Any] | None:
            raw = client.get(keys.SNAPSHOT)
            snapshot: dict[str, Any] | None = json.loads(raw) if raw is not None else None
            return snapshot if snapshot is not None and snapshot["as_of_s"] > since_s else None

        try:
            return wait_until(newer, f"a snapshot newer than {since_s:.2f} is published",
                              timeout_s)
        finally:
            client.close()

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Until every task message sent to the workers has been taken and its task has
        returned, whichever the broker (``cli.lab.broker.Backlog``): nothing waits in its queue
        and no live worker holds one. Seen twice in a row, since a message being handed to a
        worker is briefly in neither."""
        alive = [node for name, node in self.worker_nodes.items()
                 if name in self.procs and self.procs[name].poll() is None]
        backlog = Backlog(self.broker_url, alive)
        idle_before = False

        def idle_twice() -> bool:
            nonlocal idle_before
            idle = backlog.count() == 0
            seen_twice, idle_before = idle and idle_before, idle
            return seen_twice

        try:
            wait_until(idle_twice, "the workers have handled every task message", timeout_s)
        finally:
            backlog.close()


def start_stack(log_dir: Path, *, database_url: str, redis_url: str, simulator_url: str,
                image_dir: Path, extra_env: dict[str, str] | None = None,
                workers: int = 1, concurrency: int = 4, metrics: bool = False) -> RunningStack:
    """The stack's processes; ``metrics``: each worker and the scheduler serve their metrics on a
    free port (``RunningStack.metrics_urls``; the API's are on its own port)."""
    port = free_port()
    env: dict[str, Any] = {
        "IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": redis_url,
        "IMGQ_IMAGE_DIR": str(image_dir),
        "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "IMGQ_DISPATCH_INTERVAL_S": "0.2",
        "IMGQ_WORKER_HEARTBEAT_S": "0.5", **(extra_env or {}),
    }
    env.setdefault("IMGQ_CATALOGUE_PATH", str(fast_catalogue(log_dir, name="fast-catalogue.toml")))
    env["IMGQ_CATALOGUE_PATH"] = str(write_simulator_catalogue(  # models without a key: simulator
        simulator_url, log_dir / "simulator-catalogue.json", source=Path(env["IMGQ_CATALOGUE_PATH"])))
    env.setdefault("IMGQ_TENANT_RPM", "0")  # tests poll faster than a tenant's default 600/min
    stack = RunningStack(f"http://127.0.0.1:{port}", env, log_dir, metrics=metrics)
    if metrics:
        stack.metrics_urls["api"] = stack.api_url
    try:
        stack.start_api()
        for k in range(workers):
            stack.start_worker(f"worker{k + 1}", concurrency)
        stack.start_scheduler()
        stack.wait_workers(workers)
    except Exception:
        logs = stack.logs()
        stack.stop_all()
        raise RuntimeError(logs) from None
    return stack


def can_fake_hostnames() -> str | None:
    """None if ``start_worker(hostname=...)`` works here, else why not (``unshare --uts`` needs
    root, or CAP_SYS_ADMIN)."""
    try:
        done = subprocess.run(["unshare", "--uts", "hostname", "imgq-probe"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not usable: {exc}"
    return None if done.returncode == 0 else f"unshare --uts refused: {done.stderr.strip()}"
