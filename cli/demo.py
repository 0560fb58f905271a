"""``imgq demo``: a private stack, a handful of prompts, and where each image came from."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.client import TERMINAL, ApiClient, ApiClientError
from cli.localstack import start_local_stack
from cli.stack import free_port
from imagequeue.settings import Settings

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


def run_demo(settings: Settings, *, prompts: int, profile: str, latency_scale: float) -> int:
    stack, info = start_local_stack(settings, api_port=free_port(), profile=profile,
                                    latency_scale=latency_scale)
    client = ApiClient(info["api_url"], info["api_key"])
    try:
        return _run(client, prompts)
    except ApiClientError as exc:
        console.print(f"[red]demo failed: {exc}[/] (logs in var/logs/)")
        return 1
    finally:
        client.close()
        stack.stop()


def _run(client: ApiClient, count: int) -> int:
    texts = [PROMPTS[k % len(PROMPTS)] for k in range(count)]
    jobs = [client.submit({"prompt": text, "size": "1024x1024"}) for text in texts]
    console.print(f"submitted {len(jobs)} jobs; positions "
                  f"{', '.join(str(j['queue_position']) for j in jobs)}")
    finished: dict[str, dict[str, Any]] = {}
    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("jobs", total=len(jobs))
        deadline = time.monotonic() + 600
        while len(finished) < len(jobs) and time.monotonic() < deadline:
            for job in jobs:
                if job["id"] not in finished:
                    current = client.job(job["id"])
                    if current["status"] in TERMINAL:
                        finished[job["id"]] = current
            progress.update(task, completed=len(finished))
            time.sleep(0.3)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    served: Counter[str] = Counter()
    for job in jobs:
        done = finished.get(job["id"], job)
        paths = []
        for image in done.get("images", []):
            ext = {"image/png": "png", "image/jpeg": "jpg", "image/svg+xml": "svg"}.get(
                image["content_type"], "bin")
            path = OUTPUT_DIR / f"{done['id']}-{image['index']}.{ext}"
            path.write_bytes(client.image(image["url"]))
            paths.append(str(path))
        served[done.get("served_by") or done["status"]] += 1
        if done.get("served_by"):
            note = (f" [yellow]degraded: {done['requested_model']} was unavailable[/]"
                    if done.get("degraded") else "")
            console.print(f"[green]✓[/] {done['prompt'][:44]!r:48} [bold]{done['served_by']}[/]"
                          f"{note}\n    → {', '.join(paths)}")
        else:
            error = done.get("error") or {}
            console.print(f"[red]✗[/] {done['prompt'][:44]!r:48} {done['status']}: "
                          f"{error.get('type', '')} {error.get('message', '')[:120]}")
    console.print("served: " + ", ".join(f"{model} × {n}" for model, n in served.most_common()))
    succeeded = sum(1 for j in finished.values() if j["status"] == "succeeded")
    console.print(f"[bold]{succeeded}/{len(jobs)} succeeded[/]; images in {OUTPUT_DIR.resolve()}")
    return 0 if succeeded == len(jobs) else 1
