"""``imgq``: run the stack, submit prompts and watch them, from one command line."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.batches import is_batch_file, submit_file
from cli.batches import register as register_batch_commands
from cli.client import DEFAULT_API_URL, ApiClient, ApiClientError, resolve_api_key
from cli.operator import catalogue_or_exit, settings_or_exit
from cli.operator import register as register_operator_commands
from cli.workers import register as register_worker_commands

app = typer.Typer(
    help="imagequeue: a job queue for text-to-image generation that fails over between vendors.",
    no_args_is_help=True, add_completion=False)
tenant_app = typer.Typer(help="Manage tenants and their API keys.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
console = Console()

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="IMGQ_API_URL", help="The API's base URL.")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="IMGQ_API_KEY",
                                            help="Tenant API key (default: var/local-api-key).")]


def _client(api_url: str, api_key: str | None) -> ApiClient:
    try:
        return ApiClient(api_url, resolve_api_key(api_key))
    except ApiClientError as exc:
        raise typer.BadParameter(str(exc)) from exc


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port on 127.0.0.1.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 1,
    profile: Annotated[str, typer.Option(help="Simulator failure profile.")] = "healthy",
    latency_scale: Annotated[float, typer.Option(help="Scale the simulator's latencies.")] = 1.0,
) -> None:
    """Start the API, worker(s), the scheduler and (without vendor keys) the simulator. Ctrl-C stops all."""
    from cli.localstack import start_local_stack

    settings = settings_or_exit()
    catalogue_or_exit(settings)
    stack, info = start_local_stack(settings, api_port=port, workers=workers,
                                    profile=profile, latency_scale=latency_scale)
    console.print(f"[green]imagequeue is up[/]: API {info['api_url']} (docs at /docs), "
                  f"logs in var/logs/. API key for the local tenant is in var/local-api-key.")
    console.print("Try: [bold]imgq submit 'a lighthouse at dawn' --wait[/]   Ctrl-C stops everything.")
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping:
            dead = stack.check_alive()
            if dead:
                console.print(f"[red]{dead} exited; see var/logs/{dead}.log. Stopping.[/]")
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        stack.stop()


@app.command()
def demo(
    prompts: Annotated[int, typer.Option(help="How many prompts to submit.")] = 28,
    profile: Annotated[str, typer.Option(help="Simulator failure profile.")] = "peak-hours",
    latency_scale: Annotated[float, typer.Option(help="Scale the simulator's latencies.")] = 0.2,
) -> None:
    """Start a private stack at peak hours: watch jobs fail over from Gemini 3 Pro Image, its
    breaker open, and the tally of which model served what (about a minute)."""
    from cli.demo import run_demo

    settings = settings_or_exit()
    catalogue_or_exit(settings)
    raise typer.Exit(run_demo(settings, prompts=prompts, profile=profile,
                              latency_scale=latency_scale))


@app.command()
def worker(
    concurrency: Annotated[int | None,
                           typer.Option(help="Threads (default IMGQ_WORKER_CONCURRENCY).")] = None,
    name: Annotated[str, typer.Option(help="Celery node name.")] = "worker@%h",
) -> None:
    """Run a Celery worker that executes image jobs."""
    from workers.app import make_celery

    settings = settings_or_exit()
    catalogue_or_exit(settings)
    if concurrency:
        settings.worker_concurrency = concurrency
    celery = make_celery(settings)
    celery.worker_main(["worker", "-Q", "imgq", "-P", "threads", "-c",
                        str(settings.worker_concurrency), "-n", name, "--loglevel", "INFO"])


@app.command()
def scheduler() -> None:
    """Run the dispatcher, the snapshot publisher and webhook delivery (one active at a time;
    others stand by)."""
    import logging

    from scheduler.process import SchedulerProcess

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_or_exit()
    process = SchedulerProcess.build(settings, catalogue_or_exit(settings))

    def _stop(*_: Any) -> None:
        process.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    process.run()


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int | None, typer.Option(
        min=1, max=64, help="Processes serving the port (default IMGQ_API_WORKERS).")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs), in one process or ``--workers`` of them."""
    import uvicorn

    from api.app import create_app
    from api.serving import NoDelayHTTPProtocol
    from storage.db import migrate

    settings = settings_or_exit()
    catalogue_or_exit(settings)
    migrate(settings.database_url)
    processes = workers or settings.api_workers
    if processes == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info",
                    http=NoDelayHTTPProtocol)
        return
    _share_link_secret(settings, processes)
    # Each process builds its app from the environment (api/asgi.py), as `uvicorn --workers`.
    uvicorn.run("api.asgi:app", host=host, port=port, log_level="info", workers=processes,
                http=NoDelayHTTPProtocol)


def _share_link_secret(settings: Any, processes: int) -> None:
    """Signed image links must open on whichever process a client reaches: without
    IMGQ_GATEWAY_URL_SECRET, one secret made now goes to every process."""
    import os
    import secrets

    secret = settings.gateway_url_secret
    if secret is not None and secret.get_secret_value():
        return
    os.environ["IMGQ_GATEWAY_URL_SECRET"] = secrets.token_urlsafe(32)
    console.print(f"[yellow]IMGQ_GATEWAY_URL_SECRET is not set[/]: the {processes} API processes "
                  f"share a secret made now, so signed image links stop opening when `imgq api` "
                  f"restarts, and on any other API host; set the same secret on every host.")


@app.command()
def simulate(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8090,
    profile: Annotated[str, typer.Option(help="Built-in profile name or a profile file.")] = "healthy",
    latency_scale: Annotated[float | None, typer.Option(help="Scale every latency.")] = None,
) -> None:
    """Run the vendor simulator: every vendor's wire format on one port, with failure profiles."""
    from simulator import serve

    serve(host, port, profile, latency_scale=latency_scale)


@app.command("simulator-catalogue")
def simulator_catalogue(
    out: Annotated[Path, typer.Option(help="The catalogue file to write (JSON).")],
    simulator_url: Annotated[str, typer.Option(help="Where the processes reach the simulator.")],
    source: Annotated[Path | None, typer.Option(
        help="The catalogue to point (default: the shipped one).")] = None,
) -> None:
    """Write a catalogue whose models without an API key call the simulator, for
    IMGQ_CATALOGUE_PATH (models with a key in this environment keep their vendor)."""
    from providers.catalogue import CatalogueError
    from simulator.catalogue import write_simulator_catalogue

    try:
        path = write_simulator_catalogue(simulator_url, out, source=source)
    except CatalogueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--source") from None
    console.print(f"wrote {path}: models without a key call the simulator at {simulator_url}",
                  soft_wrap=True, highlight=False)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from storage.db import migrate as run_migrations

    settings = settings_or_exit()
    run_migrations(settings.database_url)
    console.print(f"schema is up to date at {settings.database_url}")


LIMIT_HELP = "0 = no limit; `default` = the IMGQ_TENANT_* default"
Rpm = Annotated[str | None, typer.Option("--rpm", help=f"Requests per minute ({LIMIT_HELP}).")]
MaxQueued = Annotated[str | None, typer.Option(
    "--max-queued", help=f"Jobs waiting or running at once ({LIMIT_HELP}).")]
MaxRunning = Annotated[str | None, typer.Option(
    "--max-running", help=f"Jobs running at once, its share of the worker slots ({LIMIT_HELP}).")]
BudgetUsd = Annotated[str | None, typer.Option(
    "--budget-usd", help=f"Spend per budget period in USD ({LIMIT_HELP}).")]
BudgetPeriod = Annotated[str | None, typer.Option(
    "--budget-period", help="day or month (UTC); `default` = IMGQ_TENANT_BUDGET_PERIOD.")]


def _limit_options(rpm: str | None, max_queued: str | None, max_running: str | None,
                   budget_usd: str | None, budget_period: str | None) -> dict[str, Any]:
    """The limits given on the command line: column -> value, None for `default`."""
    given = {"rpm": (rpm, int), "max_queued": (max_queued, int), "max_running": (max_running, int),
             "budget_usd": (budget_usd, float), "budget_period": (budget_period, str)}
    changes: dict[str, Any] = {}
    for column, (text, kind) in given.items():
        if text is None:
            continue
        option = "--" + column.replace("_", "-")
        if text.strip().lower() == "default":
            changes[column] = None
            continue
        try:
            value = kind(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a number (or `default`)",
                                     param_hint=option) from None
        if kind is str and value not in ("day", "month"):
            raise typer.BadParameter("give day, month or default", param_hint=option)
        if kind is not str and value < 0:
            raise typer.BadParameter("give 0 (no limit) or more, or default", param_hint=option)
        changes[column] = value
    return changes


def _print_limits(tenant: Any, settings: Any) -> None:
    from scheduler.tenants.quotas import LimitDefaults, TenantLimits

    limits = TenantLimits.resolve(tenant, LimitDefaults.from_settings(settings))

    def shown(column: str, value: Any, unit: str = "") -> str:
        origin = "default" if getattr(tenant, column) is None else "own"
        text = "no limit" if value in (0, None) else f"{value}{unit}"
        return f"{column} {text} ({origin})"

    budget = None if limits.budget_usd is None else f"{limits.budget_usd:g}"
    console.print("limits: " + ", ".join([
        shown("rpm", limits.rpm, "/min"), shown("max_queued", limits.max_queued),
        shown("max_running", limits.max_running),
        shown("budget_usd", budget and f"${budget}", f" per {limits.budget_period}"),
        shown("budget_period", limits.budget_period)]), soft_wrap=True)


def _publish_running_cap(settings: Any, tenant: Any) -> None:
    """The dispatcher reloads caps every IMGQ_TENANT_LIMITS_REFRESH_S; this makes it at once."""
    import redis

    from scheduler.tenants.quotas import set_running_cap

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        set_running_cap(client, tenant.id, tenant.max_running)
    except redis.RedisError:
        console.print(f"(Redis is unreachable: the dispatcher applies max_running within "
                      f"{settings.tenant_limits_refresh_s:g} s of reaching it)")
    finally:
        client.close()


def _announce_tenant_change(settings: Any, tenant: Any) -> None:
    """API processes hold callers' tenants for IMGQ_API_TENANT_CACHE_S; this makes them forget."""
    import redis

    from imagequeue import keys

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.publish(keys.TENANTS_CHANNEL, tenant.id)
    except redis.RedisError:
        console.print(f"(Redis is unreachable: the API applies the limits within "
                      f"{settings.api_tenant_cache_s:g} s)")
    finally:
        client.close()


@tenant_app.command("create")
def tenant_create(name: Annotated[str, typer.Argument(help="A unique tenant name.")],
                  rpm: Rpm = None, max_queued: MaxQueued = None, max_running: MaxRunning = None,
                  budget_usd: BudgetUsd = None, budget_period: BudgetPeriod = None) -> None:
    """Create a tenant and print its API key (shown once; only a hash is stored). Limits not
    given follow the IMGQ_TENANT_* defaults; change them later with `imgq tenant set`."""
    from sqlalchemy.exc import IntegrityError

    from storage.db import make_engine, make_sessionmaker
    from storage.db import migrate as run_migrations
    from storage.tenants import create_tenant

    limits = _limit_options(rpm, max_queued, max_running, budget_usd, budget_period)
    settings = settings_or_exit()
    run_migrations(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    try:
        with sessions.begin() as session:
            tenant, key = create_tenant(session, name, **limits)
    except IntegrityError:
        console.print(f"[red]a tenant named {name!r} already exists[/]")
        raise typer.Exit(1) from None
    if tenant.max_running is not None:
        _publish_running_cap(settings, tenant)
    console.print(f"tenant {tenant.id} ({name})")
    _print_limits(tenant, settings)
    typer.echo(key)


@tenant_app.command("set")
def tenant_set(name: Annotated[str, typer.Argument(help="The tenant's name.")],
               rpm: Rpm = None, max_queued: MaxQueued = None, max_running: MaxRunning = None,
               budget_usd: BudgetUsd = None, budget_period: BudgetPeriod = None) -> None:
    """Change a tenant's limits (only those given; `default` puts one back to the
    IMGQ_TENANT_* default) and print the limits in force. The API applies them to the next
    request; the dispatcher applies max_running at once (or within
    IMGQ_TENANT_LIMITS_REFRESH_S)."""
    from storage.db import make_engine, make_sessionmaker
    from storage.db import migrate as run_migrations
    from storage.tenants import set_limits, tenant_by_name

    limits = _limit_options(rpm, max_queued, max_running, budget_usd, budget_period)
    settings = settings_or_exit()
    run_migrations(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with sessions.begin() as session:
        tenant = tenant_by_name(session, name)
        if tenant is None:
            console.print(f"[red]no tenant named {name!r}[/] (create it with `imgq tenant create`)")
            raise typer.Exit(1)
        set_limits(tenant, limits)
    if limits:
        _announce_tenant_change(settings, tenant)
    if "max_running" in limits:
        _publish_running_cap(settings, tenant)
    console.print(f"tenant {tenant.id} ({name})" + ("" if limits else ": nothing changed"))
    _print_limits(tenant, settings)


@app.command()
def submit(
    prompt: Annotated[str, typer.Argument(help="The prompt, or a .jsonl/.txt/.csv file.")],
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT.")] = "1024x1024",
    n: Annotated[int, typer.Option(help="Images to generate.")] = 1,
    model: Annotated[str | None, typer.Option(help="Pin a model (no fallback).")] = None,
    route: Annotated[str | None, typer.Option(help="A named route (default: default).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the job finishes.")] = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Queue one prompt, or a batch file (.jsonl, .txt one prompt per line, .csv with a prompt
    column); with --wait, follow it to the end."""
    client = _client(api_url, api_key)
    if is_batch_file(prompt):
        try:
            raise typer.Exit(submit_file(client, prompt, wait=wait, model=model, route=route))
        except ApiClientError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
    body: dict[str, Any] = {"prompt": prompt, "size": size, "n": n}
    if model:
        body["model"] = model
    if route:
        body["route"] = route
    try:
        job = client.submit(body)
        console.print(f"queued {job['id']} (position {job['queue_position']})")
        if wait:
            with console.status(f"waiting for {job['id']}…"):
                job = client.wait(job["id"])
            _print_job(job)
            if job["status"] != "succeeded":
                raise typer.Exit(1)
    except ApiClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


@app.command()
def status(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON.")] = False,
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Follow position and ETA live until the job ends.")]
    = False,
    api_url: ApiUrl = DEFAULT_API_URL,
    api_key: ApiKey = None,
) -> None:
    """Show a job: status, queue position and ETA, the model that served it and every attempt."""
    client = _client(api_url, api_key)
    try:
        if follow:
            for event in client.events(f"/v1/jobs/{job_id}/events"):
                console.print(_progress_line(event))
        job = client.job(job_id)
    except ApiClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        _print_job(job)


def _progress_line(event: dict[str, Any]) -> str:
    """One line per change: where the job stands and when it should be ready."""
    def secs(value: float | None) -> str:
        return "?" if value is None else f"~{value:.1f}s"

    parts = [time.strftime("%H:%M:%S"), event["status"]]
    if event.get("queue_position") is not None:
        parts.append(f"position {event['queue_position']}")
    elif event["status"] == "queued" and event.get("eta_start_seconds") == 0.0:
        parts.append("handed to a worker")
    if event["status"] == "queued":
        parts.append(f"starts in {secs(event.get('eta_start_seconds'))}, "
                     f"ready in {secs(event.get('eta_finish_seconds'))}")
    if event.get("waiting_for"):
        parts.append(event["waiting_for"])
    elif event.get("current_model"):
        parts.append(f"on {event['current_model']}, ready in {secs(event.get('eta_finish_seconds'))}")
    if event.get("served_by"):
        parts.append(f"served by {event['served_by']}" + (" (fallback)" if event["degraded"] else ""))
    return " · ".join(parts)


def _print_job(job: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red", "canceled": "yellow"}.get(job["status"], "cyan")
    console.print(f"[bold]{job['id']}[/] [{colour}]{job['status']}[/]  {job['prompt'][:60]!r}")
    if job["queue_position"] is not None:
        console.print(f"  queue position: {job['queue_position']}")
    if job["served_by"]:
        note = " [yellow](fallback: degraded)[/]" if job["degraded"] else ""
        console.print(f"  served by {job['served_by']}{note}  cost ${job['cost_usd']:.3f}")
    if job["error"]:
        console.print(f"  [red]{job['error']['type']}[/]: {job['error']['message']}")
    if job.get("notice"):
        console.print(f"  [yellow]{escape(job['notice'])}[/]")
    table = Table("model", "outcome", "latency ms", "http", box=None, pad_edge=False)
    for attempt in job["attempts"]:
        table.add_row(attempt["model"], attempt["outcome"], str(attempt["latency_ms"]),
                      str(attempt["http_status"] or ""))
    if job["attempts"]:
        console.print(table)
    for image in job["images"]:
        console.print(f"  image {image['index']}: {image['url']} ({image['width']}x{image['height']})")


register_batch_commands(app)  # watch, results, batches
register_operator_commands(app)  # models, breaker
register_worker_commands(app)  # workers


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(app())
