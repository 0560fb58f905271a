"""``imgq api --workers N``: several real API processes on one port, one signing secret among them
when none is set (a signed image link opens whichever process a client reaches), answers sent at
once (no 40 ms wait for a delayed ACK), and a bad count refused."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import _share_link_secret, app
from cli.stack import free_port, spawn, stop_process, wait_http, wait_until
from imagequeue.settings import Settings

pytestmark = pytest.mark.timeout(120)
SECRET = "IMGQ_GATEWAY_URL_SECRET"


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found += [int(c) for c in children]
        todo += [int(c) for c in children]
    return found


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)


def serving(pid: int) -> list[int]:
    """The API processes under ``pid``: those that import the app (uvicorn's spawned workers)."""
    return [p for p in descendants(pid)
            if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]


def test_workers_share_one_made_secret_and_answer_without_delay(
        tmp_path: Path, clean_redis: str) -> None:
    port = free_port()
    env = {"IMGQ_DATABASE_URL": f"sqlite:///{tmp_path / 'imgq.db'}", "IMGQ_REDIS_URL": clean_redis,
           "IMGQ_IMAGE_DIR": str(tmp_path / "images"), SECRET: ""}
    log = tmp_path / "api.log"
    proc = spawn([sys.executable, "-m", "cli", "api", "--port", str(port), "--workers", "2"],
                 env=env, log=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout_s=60)
        wait_until(lambda: len(serving(proc.pid)) == 2, "both API processes run", 30)
        secrets = {environ(p).get(SECRET) for p in serving(proc.pid)}
        assert len(secrets) == 1 and all(secrets), secrets  # one secret, made for them all
        assert "IMGQ_GATEWAY_URL_SECRET is not set" in log.read_text()

        spent = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(20):
                started = time.perf_counter()
                client.get("/healthz").raise_for_status()
                spent.append(time.perf_counter() - started)
        assert statistics.median(spent) < 0.03, spent  # Nagle's wait would be about 0.04 s
    finally:
        stop_process(proc)
    assert proc.returncode is not None


def test_a_secret_that_is_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET, "the operator's")
    _share_link_secret(Settings(), 4)
    assert os.environ[SECRET] == "the operator's"


def test_a_bad_worker_count_is_refused_by_name() -> None:
    result = CliRunner().invoke(app, ["api", "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.stderr
    out = subprocess.run([sys.executable, "-m", "cli", "api", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "--workers" in out and "IMGQ_API_WORKERS" in out
