"""Live streams and the number of clients: what N open SSE clients cost the database and the API.

    python -m benchmarks.sse_clients                      # N = 0, 50, 500; job, batch, status
    python -m benchmarks.sse_clients --clients 0 500 --window-s 30 --kinds status

A real API process (uvicorn) on a throwaway PostgreSQL cluster (initdb) and a private
redis-server, with the real scheduler publishing its snapshot once a second (no worker runs, so
every job stays queued and every stream stays open). For each kind of stream and each N, N
concurrent clients (httpx, asyncio) each follow a stream of their own: a queued job
(``/v1/jobs/{id}/events``), a batch (``/v1/batches/{id}/events``) or the status
(``/v1/status/stream``); once every client has its first event, a window of ``--window-s`` is
measured:

- API stmts/s: SQL statements the API process sent, counted in that process by a SQLAlchemy
  ``before_cursor_execute`` listener (this module's ``counting_app``, read over HTTP at the
  window's ends); per client/s is that divided by N;
- DB xacts/s: PostgreSQL's own count for the database, ``pg_stat_database`` xact_commit +
  xact_rollback, which includes the scheduler's (the N = 0 row is that floor);
- API CPU s/s: the API process's user + system CPU seconds (``/proc/<pid>/stat``) per second;
- events/client/s: events each client received in the window. A status stream sends every
  document (about 1 a second); a job or batch stream only what changed, and nothing changes for
  a job that waits with no worker alive, so theirs is 0 while they still read at each snapshot.

pg_stat_database counts are reported by each backend when it goes idle, up to some 10 s late:
each window starts ``STATS_SETTLE_S`` after the last client connected.

Goal: the status and job streams' queries per second do not grow with N (one status document
per snapshot, shared by every client: ``api.status.StatusFeed``; every watched job loaded in one
query per snapshot, each stream taking its own: ``api.job_feed.JobFeed``). Batch streams read
their own batch at each snapshot, so theirs grow with N; the figures say by how much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

from cli.lab.postgres import ThrowawayPostgres
from cli.stack import RedisServer, free_port, spawn, stop_process, wait_http, wait_until
from storage.db import drop_schema, make_engine, make_sessionmaker, migrate
from storage.tenants import create_tenant

KINDS = ("job", "batch", "status")
STATS_SETTLE_S = 11.0
QUERIES_PATH = "/_bench/statements"


def counting_app() -> Any:
    """The real API app, plus a counter of the SQL statements this process sends
    (``uvicorn --factory benchmarks.sse_clients:counting_app``)."""
    from fastapi import FastAPI

    from api.app import create_app

    sent = {"statements": 0}

    def count(*_: Any) -> None:
        sent["statements"] += 1

    event.listen(Engine, "before_cursor_execute", count)  # every engine of this process
    app: FastAPI = create_app()

    @app.get(QUERIES_PATH, include_in_schema=False)
    def statements() -> dict[str, int]:
        return dict(sent)

    return app


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pg_transactions(database_url: str) -> int:
    url = make_url(database_url)
    with psycopg.connect(host=url.host or "127.0.0.1", port=url.port or 5432,
                         user=url.username or "postgres", password=url.password,
                         dbname=url.database, autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Figures:
    kind: str
    clients: int
    window_s: float
    statements: int
    transactions: int
    cpu_s: float
    events: int
    connected: int

    def row(self) -> str:
        per_s = self.statements / self.window_s
        per_client = f"{per_s / self.clients:.2f}" if self.clients else "-"
        per_client_events = (f"{self.events / self.clients / self.window_s:.2f}"
                             if self.clients else "-")
        return (f"{self.kind:<7} {self.clients:>7} {per_s:>12.1f} {per_client:>13} "
                f"{self.transactions / self.window_s:>11.1f} {self.cpu_s / self.window_s:>12.2f} "
                f"{per_client_events:>16}")


HEADER = (f"{'stream':<7} {'clients':>7} {'API stmts/s':>12} {'per client/s':>13} "
          f"{'DB xacts/s':>11} {'API CPU s/s':>12} {'events/client/s':>16}")


class Bench:
    def __init__(self, database_url: str | None, work: Path) -> None:
        self.work = work
        self.postgres: ThrowawayPostgres | None = None
        if database_url is None:
            self.postgres = ThrowawayPostgres(Path(tempfile.mkdtemp(prefix="imgq-sse-pg-")))
            self.postgres.start()
            database_url = self.postgres.url
        else:
            drop_schema(database_url)
        self.database_url = database_url
        migrate(database_url)
        engine = make_engine(database_url)
        with make_sessionmaker(engine).begin() as session:
            _, self.api_key = create_tenant(session, "sse-clients")
        engine.dispose()
        # A private server: a pub/sub channel is shared by every database of a server.
        self.redis = RedisServer(work / "redis.log").start()
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {"IMGQ_DATABASE_URL": database_url, "IMGQ_REDIS_URL": self.redis.url,
                    "IMGQ_IMAGE_DIR": str(work / "images"), "IMGQ_PUBLIC_BASE_URL": self.url,
                    "IMGQ_TENANT_RPM": "0", "IMGQ_TENANT_MAX_QUEUED": "0"}
        self.api = spawn([sys.executable, "-m", "uvicorn", "--factory",
                          "benchmarks.sse_clients:counting_app", "--host", "127.0.0.1",
                          "--port", str(port), "--log-level", "warning"],
                         env=self.env, log=work / "api.log")
        wait_http(f"{self.url}/healthz", proc=self.api)
        self.scheduler = spawn([sys.executable, "-m", "cli", "scheduler"], env=self.env,
                               log=work / "scheduler.log")
        self.http = httpx.Client(base_url=self.url, timeout=60,
                                 headers={"Authorization": f"Bearer {self.api_key}"})
        wait_until(lambda: self.http.get("/v1/status").json()["snapshot_age_seconds"] is not None,
                   "the scheduler publishes a snapshot", 30)

    def close(self) -> None:
        self.http.close()
        stop_process(self.scheduler)
        stop_process(self.api)
        self.redis.stop()
        if self.postgres is not None:
            self.postgres.destroy()

    def subjects(self, kind: str, count: int) -> list[str]:
        """What each client follows: its own queued job, its own batch, or the status."""
        if kind == "status":
            return ["/v1/status/stream"] * count
        paths = []
        for k in range(count):
            if kind == "job":
                job = self.http.post("/v1/jobs", json={"prompt": f"a lighthouse, study {k}"})
                job.raise_for_status()
                paths.append(f"/v1/jobs/{job.json()['id']}/events")
            else:
                body = b'{"custom_id": "a", "prompt": "a boat"}\n{"custom_id": "b", "prompt": "a fox"}\n'
                batch = self.http.post("/v1/batches", content=body,
                                       headers={"Content-Type": "application/jsonl"})
                batch.raise_for_status()
                paths.append(f"/v1/batches/{batch.json()['id']}/events")
        return paths

    def statements(self) -> int:
        return int(self.http.get(QUERIES_PATH).json()["statements"])

    def measure(self, kind: str, clients: int, window_s: float) -> Figures:
        paths = self.subjects(kind, clients)
        return asyncio.run(self._measure(kind, paths, window_s))

    async def _measure(self, kind: str, paths: Sequence[str], window_s: float) -> Figures:
        events = [0] * len(paths)
        limits = httpx.Limits(max_connections=len(paths) + 10, max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, limits=limits,
                                     timeout=httpx.Timeout(60, read=None)) as client:

            async def follow(k: int, path: str) -> None:
                tail = b""
                async with client.stream("GET", path) as response:
                    response.raise_for_status()
                    async for chunk in response.aiter_bytes():
                        data = tail + chunk  # a "data:" cut in two by a chunk's end counts once
                        events[k] += data.count(b"data:")
                        tail = data[-4:]

            readers = [asyncio.create_task(follow(k, p)) for k, p in enumerate(paths)]
            deadline = time.monotonic() + 120
            while sum(1 for e in events if e) < len(paths):
                if time.monotonic() > deadline or any(r.done() for r in readers):
                    break
                await asyncio.sleep(0.1)
            connected = sum(1 for e in events if e)
            # A backend reports its counts to pg_stat_database when it goes idle, up to
            # STATS_SETTLE_S later: the setup's (submits, connecting) must not land in the window.
            await asyncio.sleep(STATS_SETTLE_S)
            before = (await asyncio.to_thread(self.statements),
                      await asyncio.to_thread(pg_transactions, self.database_url),
                      cpu_seconds(self.api.pid), sum(events), time.monotonic())
            await asyncio.sleep(window_s)
            after = (await asyncio.to_thread(self.statements),
                     await asyncio.to_thread(pg_transactions, self.database_url),
                     cpu_seconds(self.api.pid), sum(events), time.monotonic())
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        wait_until(lambda: self.http.get("/v1/status").json()["open_event_streams"] == 0,
                   "every stream of this round has closed", 60, poll_s=0.5)
        return Figures(kind, len(paths), after[4] - before[4], after[0] - before[0],
                       after[1] - before[1], after[2] - before[2], after[3] - before[3],
                       connected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[0, 50, 500])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--database-url", default=None,
                        help="a PostgreSQL database to wipe and use (default: a throwaway "
                             "cluster of its own, with initdb)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two sockets per client
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    with tempfile.TemporaryDirectory(prefix="imgq-sse-") as tmp:
        bench = Bench(args.database_url, Path(tmp))
        try:
            print(f"SSE clients on one API process (PostgreSQL, scheduler publishing once a "
                  f"second, no worker); window {args.window_s:g} s each", flush=True)
            print(HEADER, flush=True)
            for kind in args.kinds:
                for clients in args.clients:
                    figures = bench.measure(kind, clients, args.window_s)
                    note = ("" if figures.connected == clients
                            else f"   only {figures.connected} of {clients} clients connected")
                    print(figures.row() + note, flush=True)
        finally:
            bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
