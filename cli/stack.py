"""Starting and stopping child processes: the pieces of a local stack (``imgq up``/``demo``), a
private ``redis-server``, and waiting until each one answers. The test suite and the benchmarks
start their processes with these helpers too (``cli.lab``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import httpx
import redis
from rich.console import Console

console = Console(stderr=True)
REDIS_DIR = Path("var/redis")  # the private redis-server's append-only file
REDIS_INSTALL_HINT = "Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis"
T = TypeVar("T")


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


def wait_until(condition: Callable[[], T | None], what: str, timeout_s: float = 30.0,
               poll_s: float = 0.05) -> T:
    """Call ``condition`` every ``poll_s`` until it returns something true, and return that.
    After ``timeout_s`` raises TimeoutError saying what was awaited (``what``: "the worker
    registers", ...)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting until {what}")
        time.sleep(poll_s)


def spawn(args: list[str], env: dict[str, str] | None = None, log: Path | None = None, *,
          new_session: bool = False) -> subprocess.Popen[bytes]:
    """A child process with this one's environment plus ``env``, its output appended to ``log``
    (discarded without one). ``new_session``: out of this terminal's process group, so that a
    Ctrl-C reaches only this process, which then stops its children in order."""
    env = {**os.environ, **(env or {})}
    if log is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=new_session)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=new_session)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``; returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_http(url: str, timeout_s: float = 20.0,
              proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``url`` answers an HTTP GET (any status). RuntimeError if ``proc`` (the process that
    should answer) exits first, or after ``timeout_s``."""
    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
        except httpx.HTTPError:
            return False
        return True

    try:
        wait_until(answers, f"{url} answers", timeout_s, poll_s=0.1)
    except TimeoutError as exc:
        raise RuntimeError(str(exc)) from None


class RedisServerNotInstalled(RuntimeError):
    pass


@dataclass
class RedisServer:
    """A ``redis-server`` of our own on a loopback port, its output appended to ``log``.

    With ``data_dir`` it keeps an append-only file there, fsynced every second (as the Compose
    file runs Redis), so that what it held survives a restart; without, it keeps nothing on disk.
    ``port`` defaults to a free one; ``stop()`` then ``start()`` brings it back on the same port
    and directory."""

    log: Path
    port: int = field(default_factory=free_port)
    data_dir: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_for(0)

    def url_for(self, database: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def args(self) -> list[str]:
        server = shutil.which("redis-server")
        if server is None:
            raise RedisServerNotInstalled(f"redis-server is not installed ({REDIS_INSTALL_HINT})")
        args = [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""]
        if self.data_dir is None:
            return [*args, "--appendonly", "no"]
        return [*args, "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", str(self.data_dir.resolve())]

    def start(self, timeout_s: float = 10.0, *, new_session: bool = False) -> RedisServer:
        """Start it and return once it answers a PING (RuntimeError if it does not)."""
        args = self.args()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = spawn(args, log=self.log, new_session=new_session)

        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"it exited with {proc.returncode}")
            return redis_answers(self.url)

        try:
            wait_until(answers, f"redis-server answers on port {self.port}", timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            stop_process(proc)
            raise RuntimeError(f"redis-server did not start ({exc}); see {self.log}") from None
        self.proc = proc
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, as a service manager does, and wait for it to exit; returns its exit code
        (0: a clean shutdown), None if it was not running."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout_s)
        self.proc = None
        return code

    def restart(self, timeout_s: float = 10.0) -> None:
        """Stop it cleanly and start it again on the same port and directory."""
        code = self.stop(timeout_s)
        if code not in (0, None):
            raise RuntimeError(f"redis-server exited with {code} on SIGTERM; see {self.log}")
        self.start(timeout_s)


class Stack:
    """Child processes started in order and stopped in reverse order, each with a log file."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env: dict[str, str] = dict(os.environ)

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        proc = spawn(args, env=self.env, log=self.log_dir / f"{name}.log", new_session=True)
        self.procs.append((name, proc))
        return proc

    def ensure_redis(self, url: str, data_dir: Path = REDIS_DIR) -> str:
        """The Redis URL to use: ``url`` if it answers, else a private redis-server we start.

        The private one keeps an append-only file in ``data_dir`` (fsynced every second), so the
        breaker state and vendor-limit counters survive its restart with the next run."""
        if redis_answers(url):
            return url
        server = RedisServer(self.log_dir / "redis.log", data_dir=data_dir)
        try:
            server.start(new_session=True)
        except RedisServerNotInstalled:
            raise SystemExit(
                f"Nothing answers at {url} and redis-server is not installed.\n"
                f"Install it ({REDIS_INSTALL_HINT}) or point IMGQ_REDIS_URL at a running "
                "Redis.") from None
        except RuntimeError:
            raise SystemExit(f"the private redis-server did not start; see {self.log_dir}") from None
        assert server.proc is not None
        self.procs.append(("redis", server.proc))
        host = urlparse(url).netloc or url
        console.print(f"[yellow]Nothing answered at {host}: started a private redis-server on "
                      f"127.0.0.1:{server.port} for this run (append-only file in {data_dir}, "
                      "fsynced every second).[/]")
        return server.url

    def wait_http(self, name: str, url: str, timeout_s: float = 30.0) -> None:
        proc = dict(self.procs)[name]
        try:
            wait_http(url, timeout_s, proc)
        except RuntimeError:
            log = self.log_dir / f"{name}.log"
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited early; see {log}") from None
            raise SystemExit(f"{name} did not answer at {url} in {timeout_s:.0f}s; "
                             f"see {log}") from None

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
