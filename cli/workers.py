"""``imgq workers``: the live workers, read from their heartbeats in Redis (``IMGQ_REDIS_URL``),
like ``imgq breaker``: it answers while the API is down, which is when an operator asks."""

from __future__ import annotations

import json
from datetime import datetime

import redis
import typer
from rich import box
from rich.console import Console
from rich.table import Column, Table

from cli.operator import AsJson, errors, settings_or_exit
from scheduler.queue import heartbeats

console = Console()


def register(app: typer.Typer) -> None:
    app.command("workers")(workers)


def workers(as_json: AsJson = False) -> None:
    """Every live worker: node name, host, pid, concurrency, jobs it holds, version, whether it
    is shutting down, when it started and how long ago it last beat."""
    settings = settings_or_exit()
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0,
                                  socket_timeout=5.0)
    try:
        rows = heartbeats.roster(client)
    except redis.RedisError as exc:
        errors.print(f"[red]cannot read the worker heartbeats at {settings.redis_url}: {exc}[/]\n"
                     "Set IMGQ_REDIS_URL to the cluster's Redis.", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps({"workers": rows}, indent=2))
        return
    if not rows:
        console.print("no live worker (none has sent a heartbeat lately)")
        return
    table = Table(Column("worker", no_wrap=True), "host", "pid", "running", "version", "state",
                  "started", "last beat", title=f"{len(rows)} live workers", box=box.SIMPLE_HEAD,
                  pad_edge=False)
    for row in rows:
        table.add_row(row["name"], _shown(row["host"]), _shown(row["pid"]),
                      f"{_shown(row['running'])}/{row['concurrency']}", _shown(row["version"]),
                      "[yellow]shutting down[/]" if row["draining"] else "[green]serving[/]",
                      _started(row["started_at_ms"]), _ago(row["last_beat_seconds_ago"]))
    console.print(table)
    if any(row["host"] is None for row in rows):
        console.print("[yellow]? : an older worker that does not say who it is[/]")


def _shown(value: object) -> str:
    return "?" if value is None else str(value)


def _started(epoch_ms: int | None) -> str:
    if epoch_ms is None:
        return "?"
    return datetime.fromtimestamp(epoch_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _ago(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s ago"
