"""``imgq demo``: a private stack at peak hours, and failover as it happens.

The simulator's ``peak-hours`` profile answers about 45 % of Gemini 3 Pro Image calls with 503
"high demand". The demo submits a few dozen prompts and prints, as they happen, the breaker's
transitions (read from its event stream) and each result, with the fallback that served it and
why; then the tally of which model served what. Its children run with a short breaker open
period, so the half-open probes (and often the close) also fall within the minute.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.cells import set_cell_size
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from breaker import BreakerStore, Event
from breaker.factory import make_breaker_store
from cli.client import ApiClient, ApiClientError
from cli.localstack import start_local_stack
from cli.stack import free_port
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from storage.models import TERMINAL_STATUSES, JobStatus

console = Console()

PROMPTS = [
    "A red fox in fresh snow, watercolor",
    "A lighthouse at dawn, oil painting",
    "富士山と桜、浮世絵風",
    "A tiny robot watering a bonsai 🌱, isometric",
    "An art-deco poster of a night train",
    "A bowl of ramen seen from above, studio light",
    "A fantasy map of an archipelago, parchment",
    "A paper-cut owl under a full moon",
    "A glass terrarium with a tiny forest inside",
    "A vintage botanical plate of a fern",
]
OUTPUT_DIR = Path("var/demo")
DEMO_BREAKER_ENV = {
    "IMGQ_BREAKER_OPEN_DURATION_S": "8",  # the field guide's 300 s would outlast the demo
    "IMGQ_BREAKER_WINDOW_S": "30",
    "IMGQ_TENANT_RPM": "0",  # the demo polls every job three times a second
}
POLL_S = 0.3
ARRIVAL_INTERVAL_S = 2.0
DEADLINE_S = 600.0
STATE_STYLE = {"open": "bold red", "forced_open": "bold red", "half_open": "yellow",
               "closed": "green", "disabled": "cyan"}


def run_demo(settings: Settings, *, prompts: int, profile: str, latency_scale: float) -> int:
    stack, info = start_local_stack(settings, api_port=free_port(), profile=profile,
                                    latency_scale=latency_scale, child_env=DEMO_BREAKER_ENV)
    client = ApiClient(info["api_url"], info["api_key"])
    catalogue = load_catalogue(settings.catalogue_path)
    breakers = make_breaker_store(settings.model_copy(update={"redis_url": info["redis_url"]}),
                                  catalogue.models)
    try:
        return _run(client, breakers, prompts, " → ".join(catalogue.routes["default"].models))
    except ApiClientError as exc:
        console.print(f"[red]demo failed: {exc}[/] (logs in var/logs/)")
        return 1
    finally:
        client.close()
        stack.stop()


class TransitionPrinter:
    """Prints the breaker's transitions that happened since the demo started, once each."""

    def __init__(self, breakers: BreakerStore) -> None:
        self.breakers = breakers
        self.since_ms = int(time.time() * 1000)
        self.seen: set[tuple[str, int, str, str]] = set()
        self.opened: Counter[str] = Counter()

    def poll(self) -> None:
        try:
            recent = self.breakers.events(None, 50)
        except Exception:  # noqa: BLE001 - the demo goes on without its commentary
            return
        for event in reversed(recent):  # oldest first
            key = (event.model, event.at_ms, event.from_state.value, event.to_state.value)
            if event.at_ms < self.since_ms or key in self.seen:
                continue
            self.seen.add(key)
            self.opened[event.model] += event.to_state.value == "open"
            console.print(describe(event))


def describe(event: Event) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(event.at_ms / 1000))
    style = STATE_STYLE.get(event.to_state.value, "bold")
    rate = f"; {event.failures}/{event.calls} calls failed" if event.calls else ""
    return (f"[{style}]⚡ {clock} breaker {event.model}: {event.from_state.value} → "
            f"{event.to_state.value}[/] ({event.reason}{rate})")


def why_unavailable(job: dict[str, Any]) -> str:
    """What kept the requested model from serving, from the job's attempt log."""
    first = next((a for a in job.get("attempts", []) if a["model"] == job["requested_model"]), None)
    if first is None:
        return "it was not tried"
    text = str(first.get("message") or first["outcome"]).removeprefix(f"{first['model']}: ")
    if first["outcome"] != "skipped":
        status = f"HTTP {first['http_status']} " if first.get("http_status") else ""
        text = f"{status}{first['outcome']}: {text}"
    return text if len(text) <= 90 else text[:87] + "…"


def result_line(job: dict[str, Any], paths: list[str]) -> str:
    prompt = escape(set_cell_size(repr(job["prompt"][:40]), 44))
    if job.get("served_by") is None:
        error = job.get("error") or {}
        return (f"[red]✗[/] {prompt} {job['status']}: {error.get('type', '')} "
                f"{escape((error.get('message') or '')[:100])}")
    line = f"[green]✓[/] {prompt} [bold]{job['served_by']}[/]"
    if job.get("degraded"):
        notice = job.get("notice") or f"served by a fallback, not {job['requested_model']}"
        line += (f"\n    [yellow]{escape(notice)}[/] "
                 f"[dim]({job['requested_model']}: {escape(why_unavailable(job))})[/]")
    return line + (f"\n    → {', '.join(paths)}" if paths else "")


def save_images(client: ApiClient, job: dict[str, Any]) -> list[str]:
    paths = []
    for image in job.get("images", []):
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}.get(
            image["content_type"], "bin")
        path = OUTPUT_DIR / f"{job['id']}-{image['index']}.{ext}"
        path.write_bytes(client.image(image["url"]))
        paths.append(str(path))
    return paths


def _run(client: ApiClient, breakers: BreakerStore, count: int, route: str) -> int:
    """Prompts arrive one every ``ARRIVAL_INTERVAL_S``, like users at peak hours."""
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    transitions = TransitionPrinter(breakers)
    texts = [PROMPTS[k % len(PROMPTS)] for k in range(count)]
    console.print(f"{count} prompts arrive, one every {ARRIVAL_INTERVAL_S:g} s, on the default route: "
                  f"{route}", soft_wrap=True)
    jobs: list[dict[str, Any]] = []
    finished: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("jobs", total=count)
        while len(finished) < count and time.monotonic() - started < DEADLINE_S:
            while len(jobs) < count and time.monotonic() - started >= len(jobs) * ARRIVAL_INTERVAL_S:
                jobs.append(client.submit({"prompt": texts[len(jobs)], "size": "1024x1024"}))
            transitions.poll()
            for job in jobs:
                if job["id"] not in finished:
                    current = client.job(job["id"])
                    if current["status"] in TERMINAL_STATUSES:
                        finished[job["id"]] = current
                        console.print(result_line(current, save_images(client, current)))
            progress.update(task, completed=len(finished))
            time.sleep(POLL_S)
        transitions.poll()
    return _tally(jobs, finished, transitions)


def _tally(jobs: list[dict[str, Any]], finished: dict[str, dict[str, Any]],
           transitions: TransitionPrinter) -> int:
    served: Counter[str] = Counter()
    degraded = 0
    for job in jobs:
        done = finished.get(job["id"], job)
        served[done.get("served_by") or done["status"]] += 1
        degraded += bool(done.get("degraded"))
    console.print("[bold]who served what:[/] "
                  + ", ".join(f"{model} × {n}" for model, n in served.most_common()))
    opened = ", ".join(f"{model} {n}×" for model, n in transitions.opened.items()) or "none"
    console.print(f"fallbacks: {degraded} of {len(jobs)} jobs; breakers opened: {opened}")
    succeeded = sum(1 for j in finished.values() if j["status"] == JobStatus.SUCCEEDED)
    console.print(f"[bold]{succeeded}/{len(jobs)} succeeded[/]; images in {OUTPUT_DIR.resolve()}")
    console.print("Run `imgq up` to keep a stack running, `imgq breaker` to see the breakers.")
    return 0 if succeeded == len(jobs) else 1
