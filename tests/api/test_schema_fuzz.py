"""The schema fuzz pass: schemathesis generates requests from ``/openapi.json`` and sends them to
the real API (its own uvicorn process) on PostgreSQL, with a tenant's key.

It checks that no request gets a server error, that every status the API answers is documented
in the schema, and that a 405's ``Allow`` header lists every method of its path. The run is
bounded in time (``FUZZ_SECONDS``) and seeded, so a failure can be replayed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from cli.stack import free_port, spawn, stop_process, wait_http
from simulator.catalogue import write_simulator_catalogue
from storage.db import drop_schema, migrate

FUZZ_SECONDS = 75
SEED = "20261201"
CHECKS = "not_a_server_error,status_code_conformance,allow_header_conformance,unsupported_method"
# No worker runs in this pass: a valid images.generate request waits IMGQ_GATEWAY_WAIT_S for a
# job no one takes and answers its documented 503 (every other 5xx is still a failure).
CONFIG = """
[[operations]]
include-path = "/v1/images/generations"
include-method = "POST"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


@pytest.fixture()
def api(tmp_path: Path, postgres_url: str, redis_url: str) -> Iterator[tuple[str, str, Path]]:
    """(base URL, tenant API key, the API's log file) of an API process on PostgreSQL."""
    drop_schema(postgres_url)
    migrate(postgres_url)
    redis.Redis.from_url(redis_url).flushdb()
    port = free_port()
    catalogue = write_simulator_catalogue("http://127.0.0.1:9", tmp_path / "sim-catalogue.json")
    env = {"IMGQ_DATABASE_URL": postgres_url, "IMGQ_REDIS_URL": redis_url,
           "IMGQ_IMAGE_DIR": str(tmp_path / "images"), "IMGQ_CATALOGUE_PATH": str(catalogue),
           "IMGQ_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "IMGQ_TENANT_RPM": "1000000",  # the fuzzer's pace is not what this checks
           "IMGQ_GATEWAY_WAIT_S": "0.5"}  # no worker runs: a gateway call answers 503 at once
    key = subprocess.run([sys.executable, "-m", "cli", "tenant", "create", "fuzz"],
                         env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    log = tmp_path / "api.log"
    proc = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                  "--port", str(port), "--log-level", "warning"], env=env, log=log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc)
        yield f"http://127.0.0.1:{port}", key, log
    finally:
        stop_process(proc)
        drop_schema(postgres_url)


def test_schemathesis_finds_no_server_error_and_no_undocumented_status(
        api: tuple[str, str, Path], tmp_path: Path) -> None:
    url, key, log = api
    schemathesis = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG, encoding="utf-8")
    run = subprocess.run(
        [str(schemathesis), "--config-file", str(config), "run", f"{url}/openapi.json",
         "--header", f"Authorization: Bearer {key}",
         "--checks", CHECKS, "--max-time", str(FUZZ_SECONDS), "--workers", "1", "--seed", SEED,
         "--phases", "examples,coverage,fuzzing"],
        cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_SECONDS * 4)
    output = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", output)
    print(output[-2500:])
    assert generated and int(generated.group(1)) > 500, output[-4000:]
    assert run.returncode == 0, output[-6000:]
    assert "Traceback" not in log.read_text(errors="replace")


def test_a_405_lists_every_method_of_its_path(api: tuple[str, str, Path]) -> None:
    import httpx

    url, key, _ = api
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for method, path, allowed in [("PUT", "/v1/jobs/job_x", "DELETE, GET"),
                                      ("PATCH", "/v1/batches", "GET, POST"),
                                      ("POST", "/v1/status", "GET")]:
            answer = client.request(method, path)
            assert answer.status_code == 405, (method, path, answer.text)
            assert answer.headers["allow"] == allowed, (method, path)
            assert answer.json()["error"]["type"] == "method_not_allowed"
