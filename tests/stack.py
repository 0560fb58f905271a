"""The real stack for end-to-end tests: API (uvicorn), Celery worker processes and the dispatcher,
each its own process, talking to real Redis, a real database and the vendor simulator."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from cli.stack import redis_answers
from providers.catalogue import DEFAULT_CATALOGUE_PATH
from tests.conftest import free_port, spawn, stop, wait_http


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


def start_private_redis(log_dir: Path, timeout_s: float = 10.0, *, persist: bool = False,
                        port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own on a loopback port, once it answers. Returns the process and its
    URL (database 0).

    By default it keeps nothing on disk and takes a free port. ``persist`` keeps an append-only
    file (fsynced every second, as ``imgq up`` and the Compose file run it) in
    ``log_dir/redis-data``; ``port`` starts it on that port (a restart of an earlier server)."""
    port = free_port() if port is None else port
    args = [shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
            "--port", str(port), "--save", ""]
    if persist:
        data_dir = log_dir / "redis-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(data_dir.resolve())]
    else:
        args += ["--appendonly", "no"]
    proc = spawn(args, log=log_dir / "redis.log")
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout_s
    while not redis_answers(url):
        if time.monotonic() > deadline or proc.poll() is not None:
            stop(proc)
            raise RuntimeError(f"redis-server did not start; see {log_dir / 'redis.log'}")
        time.sleep(0.05)
    return proc, url


@dataclass
class RunningStack:
    api_url: str
    env: dict[str, str]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_worker(self, name: str, concurrency: int = 4,
                     env: dict[str, str] | None = None) -> None:
        """A Celery worker process; ``env`` (default: the stack's) e.g. with another catalogue."""
        self.procs[name] = spawn(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "imgq",
             "-P", "threads", "-c", str(concurrency), "-n", f"{name}@%h", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            env=env or self.env, log=self.log_dir / f"{name}.log")

    def start_scheduler(self, name: str = "scheduler") -> None:
        self.procs[name] = spawn([sys.executable, "-m", "cli", "scheduler"], env=self.env,
                                 log=self.log_dir / f"{name}.log")

    def stop(self, name: str) -> None:
        stop(self.procs.pop(name))

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

    def wait_workers(self, count: int, timeout_s: float = 30.0) -> None:
        client = redis.Redis.from_url(self.env["IMGQ_REDIS_URL"])
        deadline = time.monotonic() + timeout_s
        try:
            while client.hlen("imgq:v1:workers") < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers did not register:\n{self.logs()}")
                time.sleep(0.1)
        finally:
            client.close()


def start_stack(log_dir: Path, *, database_url: str, redis_url: str, simulator_url: str,
                image_dir: Path, extra_env: dict[str, str] | None = None,
                workers: int = 1, concurrency: int = 4) -> RunningStack:
    port = free_port()
    env: dict[str, Any] = {
        "IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": redis_url,
        "IMGQ_SIMULATOR_URL": simulator_url, "IMGQ_IMAGE_DIR": str(image_dir),
        "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "IMGQ_DISPATCH_INTERVAL_S": "0.2",
        "IMGQ_WORKER_HEARTBEAT_S": "0.5", **(extra_env or {}),
    }
    env.setdefault("IMGQ_CATALOGUE_PATH", str(fast_catalogue(log_dir, name="fast-catalogue.toml")))
    env.setdefault("IMGQ_TENANT_RPM", "0")  # tests poll faster than a tenant's default 600/min
    stack = RunningStack(f"http://127.0.0.1:{port}", env, log_dir)
    stack.procs["api"] = spawn(
        [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1", "--port",
         str(port), "--log-level", "warning"], env=env, log=log_dir / "api.log")
    try:
        wait_http(f"{stack.api_url}/healthz", proc=stack.procs["api"])
        for k in range(workers):
            stack.start_worker(f"worker{k + 1}", concurrency)
        stack.start_scheduler()
        stack.wait_workers(workers)
    except Exception:
        logs = stack.logs()
        stack.stop_all()
        raise RuntimeError(logs) from None
    return stack
