"""How fast the API accepts and enqueues a batch, and how much memory it needs to do it.

For each batch size a fresh API process (uvicorn) is started against a fresh database and a Redis
database that is emptied first; one JSONL batch is POSTed and timed from the first byte sent to
the 202 (rows committed, job ids in the waiting index). Peak memory is the API process's VmHWM
from /proc, minus its resident size before the upload. No worker runs: this measures submit only.

    python -m benchmarks.bulk_submit                       # 10,000 and 50,000 lines, SQLite
    python -m benchmarks.bulk_submit --sizes 50000 --database-url postgresql+psycopg://...

Goal: >= 5,000 jobs/s accepted on a 2-core machine; peak memory flat in the batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http
from storage.db import drop_schema, migrate


def proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def batch_body(lines: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"job-{k:06d}", "prompt": f"a lighthouse at dawn, "
                                f"study {k}", "size": "1024x1024"}).encode() + b"\n"
                    for k in range(lines))


def run_one(lines: int, database_url: str | None, redis_url: str, work: Path) -> dict[str, float]:
    db_url = database_url or f"sqlite:///{work / f'bench-{lines}.db'}"
    if database_url and database_url.startswith("postgresql"):
        drop_schema(database_url)
    migrate(db_url)
    redis.Redis.from_url(redis_url).flushdb()
    env = {"IMGQ_DATABASE_URL": db_url, "IMGQ_REDIS_URL": redis_url,
           "IMGQ_IMAGE_DIR": str(work / "images")}
    tenant = subprocess.run([sys.executable, "-m", "cli", "tenant", "create", f"bench-{lines}"],
                            env={**os.environ, **env}, capture_output=True, text=True, check=True)
    api_key = tenant.stdout.strip().splitlines()[-1]
    port = free_port()
    api = spawn([sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                 "--port", str(port), "--log-level", "warning"], env=env,
                log=work / f"api-{lines}.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", proc=api)
        body = batch_body(lines)
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/jsonl"}
        with httpx.Client(base_url=base, timeout=600, headers=headers) as client:
            client.post("/v1/batches", content=batch_body(10))  # warm up imports and pools
            rss_before_kib = proc_kib(api.pid, "VmRSS")
            started = time.perf_counter()
            response = client.post("/v1/batches", content=body)
            elapsed_s = time.perf_counter() - started
        response.raise_for_status()
        assert response.json()["request_counts"]["total"] == lines
        waiting = sum(int(redis.Redis.from_url(redis_url).zcard(k))
                      for k in redis.Redis.from_url(redis_url).scan_iter("imgq:v*:waiting*"))
        peak_kib = proc_kib(api.pid, "VmHWM")
        return {"lines": lines, "body_mib": len(body) / 2**20, "seconds": elapsed_s,
                "jobs_per_s": lines / elapsed_s, "indexed": waiting,
                "rss_before_mib": rss_before_kib / 1024,
                "peak_growth_mib": (peak_kib - rss_before_kib) / 1024}
    finally:
        stop_process(api)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None,
                        help="emptied before each run (default: a private redis-server)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgq-bench-") as tmp:
        redis_server = None
        if args.redis_url is None:
            redis_server = RedisServer(Path(tmp) / "redis.log").start()
            args.redis_url = redis_server.url
        print(f"{'lines':>7} {'body MiB':>9} {'seconds':>8} {'jobs/s':>8} {'indexed':>8} "
              f"{'RSS before MiB':>15} {'peak growth MiB':>16}")
        for lines in args.sizes:
            r = run_one(lines, args.database_url, args.redis_url, Path(tmp))
            print(f"{r['lines']:>7} {r['body_mib']:>9.1f} {r['seconds']:>8.2f} "
                  f"{r['jobs_per_s']:>8.0f} {r['indexed']:>8} {r['rss_before_mib']:>15.1f} "
                  f"{r['peak_growth_mib']:>16.1f}", flush=True)
        if redis_server is not None:
            redis_server.stop()


if __name__ == "__main__":
    main()
