"""Starting and stopping the pieces of a local stack as child processes (``imgq up``/``demo``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import redis
from rich.console import Console

console = Console(stderr=True)
REDIS_DIR = Path("var/redis")  # the private redis-server's append-only file


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class Stack:
    """Child processes started in order and stopped in reverse order, each with a log file."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env: dict[str, str] = dict(os.environ)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def ensure_redis(self, url: str, data_dir: Path = REDIS_DIR) -> str:
        """The Redis URL to use: ``url`` if it answers, else a private redis-server we start.

        The private one keeps an append-only file in ``data_dir`` (fsynced every second), so the
        breaker state and vendor-limit counters survive its restart with the next run."""
        if redis_answers(url):
            return url
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit(
                f"Nothing answers at {url} and redis-server is not installed.\n"
                "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install "
                "redis) or point IMGQ_REDIS_URL at a running Redis.")
        port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.start("redis", [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "yes", "--appendfsync", "everysec",
                             "--dir", str(data_dir.resolve())])
        private = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(private):
            if time.monotonic() > deadline:
                raise SystemExit(f"the private redis-server did not start; see {self.log_dir}")
            time.sleep(0.1)
        host = urlparse(url).netloc or url
        console.print(f"[yellow]Nothing answered at {host}: started a private redis-server on "
                      f"127.0.0.1:{port} for this run (append-only file in {data_dir}, "
                      "fsynced every second).[/]")
        return private

    def wait_http(self, name: str, url: str, timeout_s: float = 30.0) -> None:
        proc = dict(self.procs)[name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited early; see {self.log_dir / (name + '.log')}")
            try:
                httpx.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"{name} did not answer at {url} in {timeout_s:.0f}s; "
                         f"see {self.log_dir / (name + '.log')}")

    def check_alive(self) -> str | None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                return name
        return None

    def stop(self, timeout_s: float = 15.0) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
