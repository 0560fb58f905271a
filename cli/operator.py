"""Operator commands: ``imgq models`` and ``imgq breaker [open|close|disable|reset MODEL]``.

The breaker commands talk to the shared breaker in Redis directly (``IMGQ_REDIS_URL``), through
the same ``make_breaker_store`` the workers use: an operator must be able to open or reset a
breaker while the API is down or overloaded, and needs no admin token on a cluster host. The
admin API (``/v1/admin/breakers``) offers the same from afar.
"""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime
from typing import Annotated, Any

import redis
import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Column, Table

from api import breakers
from breaker import BreakerStore
from breaker.factory import make_breaker_store
from imagequeue.settings import Settings
from providers.catalogue import Catalogue, CatalogueError, load_catalogue

console = Console()
errors = Console(stderr=True)
breaker_app = typer.Typer(
    help="Show every model's circuit breaker, or open, close, disable or reset one.",
    invoke_without_command=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
Model = Annotated[str, typer.Argument(help="A model id from `imgq models`.")]
COLOURS = {"green": "green", "yellow": "yellow", "red": "red"}


def settings_or_exit() -> Settings:
    """The settings from the environment; a bad value ends the command naming the variable, the
    value and what is wrong (exit code 2), not a traceback."""
    try:
        return Settings()
    except ValidationError as exc:
        errors.print("[bold red]Invalid settings in the environment:[/]", highlight=False)
        for error in exc.errors():
            name = "IMGQ_" + "_".join(str(p) for p in error["loc"][:1]).upper()
            errors.print(f"  {name}={error.get('input')!r}: {error['msg']}", highlight=False,
                         soft_wrap=True, markup=False)
        errors.print("Fix or unset these variables (see imagequeue/settings.py for each one).")
        raise typer.Exit(2) from None


def catalogue_or_exit(settings: Settings) -> Catalogue:
    """The catalogue at ``IMGQ_CATALOGUE_PATH``; a bad file ends the command with its file, entry
    and reason (exit code 2), not a traceback."""
    try:
        return load_catalogue(settings.catalogue_path)
    except CatalogueError as exc:
        errors.print(f"[bold red]The model catalogue cannot be used.[/]\n"
                     f"  file:   {exc.source}\n  entry:  {exc.entry}\n  reason: {exc.reason}",
                     highlight=False, soft_wrap=True)
        errors.print("Fix the file, or unset IMGQ_CATALOGUE_PATH to use the shipped catalogue.")
        raise typer.Exit(2) from None


def _shared_store(settings: Settings, catalogue: Catalogue) -> BreakerStore:
    if settings.breaker_mode != "shared":
        errors.print(f"[red]IMGQ_BREAKER_MODE is {settings.breaker_mode!r}: there is no shared "
                     "breaker to operate (each worker keeps its own, or none).[/]")
        raise typer.Exit(2)
    return make_breaker_store(settings, catalogue.models)


def _redis_down(settings: Settings, exc: Exception) -> typer.Exit:
    errors.print(f"[red]cannot reach the breaker store at {settings.redis_url}: {exc}[/]\n"
                 "Set IMGQ_REDIS_URL to the cluster's Redis.", soft_wrap=True)
    return typer.Exit(1)


def _when(epoch_ms: int | None) -> str:
    return "" if epoch_ms is None else datetime.fromtimestamp(epoch_ms / 1000).strftime("%H:%M:%S")


def _model_column() -> Column:
    return Column("model", no_wrap=True)


def _health(colour: str | None) -> str:
    return f"[{COLOURS[colour]}]{colour}[/]" if colour else "unknown"


def register(app: typer.Typer) -> None:
    app.add_typer(breaker_app, name="breaker")
    app.command("models")(models)


def models(as_json: AsJson = False) -> None:
    """The catalogue: every model, its vendor and price, whether it is configured (or which
    variable to set) and its breaker's state; then the routes."""
    settings = settings_or_exit()
    catalogue = catalogue_or_exit(settings)
    states = _breaker_states(settings, catalogue)
    rows: list[dict[str, Any]] = [{"model": spec.id, "vendor": spec.vendor, "wire_format": spec.wire_format,
             "price_per_image_usd": spec.price_per_image_usd, "configured": spec.configured,
             "keyless": spec.keyless, "missing_key_hint": spec.missing_key_hint,
             "api_key_env": spec.api_key_env, **states[spec.id]}
            for spec in catalogue.models.values()]
    routes: dict[str, dict[str, Any]] = {name: {"models": list(r.models), "allow_fallback": r.allow_fallback}
              for name, r in catalogue.routes.items()}
    if as_json:
        typer.echo(json.dumps({"catalogue": str(catalogue.source), "models": rows,
                               "routes": routes}, indent=2))
        return
    table = Table(_model_column(), "vendor", "$/image", "key", "breaker", "health",
                  title=f"models in {catalogue.source}", box=box.SIMPLE_HEAD)
    for row in rows:
        key = ("keyless" if row["keyless"] else "set" if row["configured"]
               else "[red]missing[/]")
        table.add_row(row["model"], row["vendor"], f"{row['price_per_image_usd']:.3f}", key,
                      row["breaker_state"] or "unknown", _health(row["health"]))
    console.print(table)
    for name, route in routes.items():
        fallback = "" if route["allow_fallback"] else " (no fallback)"
        console.print(f"route [bold]{name}[/]: {' → '.join(route['models'])}{fallback}")
    for row in rows:
        if not row["configured"]:
            console.print(f"[yellow]{row['model']} is not configured: {row['missing_key_hint']}[/]"
                          " (or run `imgq up`, which serves unkeyed models from the simulator)",
                          soft_wrap=True)
    if any(row["health"] is None for row in rows):
        console.print(f"[yellow]breaker state unknown: no shared breaker answered at "
                      f"{settings.redis_url}[/]", soft_wrap=True)


def _breaker_states(settings: Settings, catalogue: Catalogue) -> dict[str, dict[str, str | None]]:
    unknown: dict[str, str | None] = {"breaker_state": None, "health": None}
    if settings.breaker_mode != "shared":
        return {model: dict(unknown) for model in catalogue.models}
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.0)
    try:
        client.ping()
    except redis.RedisError:
        return {model: dict(unknown) for model in catalogue.models}
    finally:
        client.close()
    store = make_breaker_store(settings, catalogue.models)
    return {model: breakers.status_fields(store, model) for model in catalogue.models}


@breaker_app.callback()
def breaker_list(
    ctx: typer.Context,
    as_json: AsJson = False,
    transitions: Annotated[int, typer.Option(min=0, help="Last transitions per model.")] = 3,
) -> None:
    """Every model's breaker: state, health colour, window figures and last transitions."""
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_or_exit()
    catalogue = catalogue_or_exit(settings)
    store = _shared_store(settings, catalogue)
    try:
        reports = breakers.all_reports(store, catalogue.models, transitions)
    except redis.RedisError as exc:
        raise _redis_down(settings, exc) from None
    if as_json:
        typer.echo(json.dumps({"models": reports}, indent=2))
        return
    fixed = [Column(name, no_wrap=True)
             for name in ("state", "health", "failed", "slow", "running", "until")]
    table = Table(_model_column(), *fixed,
                  title=f"circuit breakers (window: last {settings.breaker_window_s} s)",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for model, report in reports.items():
        window = report["window"]
        until_ms = report["open_until_ms"] or report["cooldown_until_ms"]
        figures = f"{window['failures']}/{window['calls']} ({window['failure_rate']:.0%})"
        table.add_row(model, report["state"], _health(report["colour"]), figures,
                      str(window["slow"]), _in_flight(report), _when(until_ms))
    console.print(table)
    console.print("running: calls in flight now / how many the slow-start gate allows (open: no "
                  "limit), and how many of them are slow", soft_wrap=True, style="dim")
    for model, report in reports.items():
        if report["hanging"]:
            console.print(f"[yellow]{model} is hanging: {report['slow_running']} calls run past "
                          "the slow threshold unanswered; new jobs go to the next model[/]",
                          soft_wrap=True)
        if report["misconfigured_reason"]:
            console.print(f"[red]{model} is misconfigured: {report['misconfigured_reason']}[/] "
                          f"(fix it, then `imgq breaker reset {model}`)", soft_wrap=True)
        elif report["override_reason"]:
            console.print(f"[yellow]{model} is {report['state']} by an operator: "
                          f"{report['override_reason']}[/]", soft_wrap=True)
    events = sorted(((model, e) for model, r in reports.items() for e in r["last_transitions"]),
                    key=lambda pair: int(pair[1]["at_ms"]))
    if events:
        console.print("[bold]last transitions[/]")
    for model, event in events:
        console.print(_transition_line(model, event), soft_wrap=True, highlight=False)


def _in_flight(report: dict[str, Any]) -> str:
    """``3/5`` (three calls under way, the gate allows five), ``3/open``; with the slow ones."""
    gate = "open" if report["gate_limit"] is None else str(report["gate_limit"])
    slow = report["slow_running"]
    shown = f"{report['in_flight']}/{gate}" if report["state"] == "closed" else str(
        report["in_flight"])
    return shown + (f" ({slow} slow)" if slow else "")


def _transition_line(model: str, event: dict[str, Any]) -> str:
    return (f"  {_when(event['at_ms'])}  {model}: {event['from']} → {event['to']}  "
            f"({event['reason']}; {event['failures']}/{event['calls']} failed)")


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _act(model: str, action: breakers.Action, as_json: bool, reason: str | None = None) -> None:
    settings = settings_or_exit()
    catalogue = catalogue_or_exit(settings)
    try:
        breakers.check_model(model, catalogue.models)
    except breakers.UnknownModel as exc:
        errors.print(f"[red]{exc}[/]", soft_wrap=True)
        raise typer.Exit(2) from None
    store = _shared_store(settings, catalogue)
    try:
        breakers.apply_action(store, model, action, reason)
        report = breakers.model_report(store, model, transitions=1)
    except redis.RedisError as exc:
        raise _redis_down(settings, exc) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    note = report["override_reason"] or ""
    console.print(f"{model}: [bold]{report['state']}[/] ({_health(report['colour'])})"
                  f"{'  ' + note if note else ''}", soft_wrap=True)


@breaker_app.command("open")
def breaker_open(
    model: Model,
    reason: Annotated[str | None, typer.Option(help="Why; kept in the breaker's event log.")] = None,
    as_json: AsJson = False,
) -> None:
    """Force the breaker open: no worker calls MODEL until `close` or `reset`."""
    _act(model, "open", as_json, f"{reason or 'opened by an operator'} ({_operator()}, imgq)")


@breaker_app.command("close")
def breaker_close(model: Model, as_json: AsJson = False) -> None:
    """Close the breaker: calls flow again, with a fresh window (same as `reset`)."""
    _act(model, "close", as_json)


@breaker_app.command("disable")
def breaker_disable(model: Model, as_json: AsJson = False) -> None:
    """Disable the breaker: every call is allowed and nothing is counted, until `reset`."""
    _act(model, "disable", as_json)


@breaker_app.command("reset")
def breaker_reset(model: Model, as_json: AsJson = False) -> None:
    """Closed, empty window, no cooldown, misconfiguration cleared."""
    _act(model, "reset", as_json)
