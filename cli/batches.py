"""``imgq submit FILE``, ``imgq watch BATCH_ID``, ``imgq results BATCH_ID -o DIR``, ``imgq batches``.

A FILE may be JSONL (one job per line, sent as is), plain text (one prompt per line) or CSV with a
``prompt`` column (and optional ``custom_id``, ``size``, ``n``, ``model``, ``route`` columns).
"""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cli.client import DEFAULT_API_URL, ApiClient, ApiClientError, resolve_api_key

BATCH_SUFFIXES = (".jsonl", ".ndjson", ".txt", ".csv")
CSV_COLUMNS = ("custom_id", "prompt", "size", "n", "model", "route")
console = Console()

ApiUrl = Annotated[str, typer.Option("--api-url", envvar="IMGQ_API_URL", help="The API's base URL.")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar="IMGQ_API_KEY",
                                            help="Tenant API key (default: var/local-api-key).")]


def is_batch_file(argument: str) -> bool:
    path = Path(argument)
    return path.suffix.lower() in BATCH_SUFFIXES and path.is_file()


def to_jsonl(path: Path) -> bytes:
    """The file as JSONL: JSONL unchanged; a prompt per text line; a CSV row per job."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return path.read_bytes()
    if suffix == ".txt":
        prompts = path.read_text(encoding="utf-8").splitlines()
        jobs = [{"custom_id": f"line-{k}", "prompt": p} for k, p in enumerate(prompts, 1)
                if p.strip()]
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
        if rows and "prompt" not in rows[0]:
            raise ApiClientError(f"{path}: the CSV needs a `prompt` column")
        jobs = [_csv_job(row, k) for k, row in enumerate(rows, 2)]
    return b"".join(json.dumps(job, ensure_ascii=False).encode() + b"\n" for job in jobs)


def _csv_job(row: dict[str, str], line: int) -> dict[str, Any]:
    job: dict[str, Any] = {k: row[k] for k in CSV_COLUMNS if row.get(k)}
    job.setdefault("custom_id", f"row-{line}")
    if "n" in job:
        job["n"] = int(job["n"])
    return job


def submit_file(client: ApiClient, file: str, *, wait: bool, model: str | None,
                route: str | None) -> int:
    """Upload a batch file; with ``wait``, follow it with a progress bar. Returns an exit code."""
    path = Path(file)
    params = {k: v for k, v in (("model", model), ("route", route)) if v}
    response = client.http.post("/v1/batches", content=to_jsonl(path), params=params,
                                headers={"Content-Type": "application/jsonl"}, timeout=300)
    if response.status_code == 422 and response.json().get("error", {}).get("details"):
        error = response.json()["error"]
        console.print(f"[red]{error['message']}[/]")
        for detail in error["details"][:50]:
            console.print(f"  {detail['field']}: {detail['message']}")
        return 1
    batch = client._check(response)
    console.print(f"queued batch [bold]{batch['id']}[/]: {batch['request_counts']['total']} jobs")
    return watch_batch(client, batch["id"]) if wait else 0


def watch_batch(client: ApiClient, batch_id: str, poll_s: float = 1.0) -> int:
    """A live progress bar until the batch finishes; returns 0 if every job succeeded."""
    from storage.models import FINISHED_BATCH_STATUSES, TERMINAL_STATUSES  # see ApiClient.wait

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[detail]}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(batch_id, total=None, detail="")
        while True:
            batch = client._check(client.http.get(f"/v1/batches/{batch_id}"))
            counts = batch["request_counts"]
            done = sum(counts[status] for status in TERMINAL_STATUSES)
            progress.update(task, total=counts["total"], completed=done,
                            detail=_detail(batch))
            if batch["status"] in FINISHED_BATCH_STATUSES:
                break
            time.sleep(poll_s)
    console.print(f"batch {batch_id} {batch['status']}: {counts['succeeded']} succeeded, "
                  f"{counts['failed']} failed, {counts['canceled']} canceled; "
                  f"cost ${batch['cost_usd']:.2f}")
    return 0 if counts["succeeded"] == counts["total"] else 1


def _detail(batch: dict[str, Any]) -> str:
    models = " ".join(f"{m}:{n}" for m, n in sorted(batch["served_by"].items()))
    parts = [models, f"degraded {batch['degraded']}" if batch["degraded"] else "",
             f"[red]failed {batch['request_counts']['failed']}[/]"
             if batch["request_counts"]["failed"] else "",
             f"eta {batch['eta_last_job_s']:.0f}s" if batch.get("eta_last_job_s") else ""]
    return "  ".join(p for p in parts if p)


def download_results(client: ApiClient, batch_id: str, out_dir: Path) -> tuple[Path, int]:
    """Save results.jsonl and every image into ``out_dir``; returns (results path, images)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.jsonl"
    with client.http.stream("GET", f"/v1/batches/{batch_id}/results", timeout=300) as response:
        if response.is_error:
            response.read()
            client._check(response)
        with results_path.open("wb") as handle:
            for chunk in response.iter_bytes():
                handle.write(chunk)
    zip_path = out_dir / f".{batch_id}.zip"
    with client.http.stream("GET", f"/v1/batches/{batch_id}/results.zip",
                            timeout=300) as response, zip_path.open("wb") as handle:
        for chunk in response.iter_bytes():
            handle.write(chunk)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(out_dir)
        count = len(archive.namelist())
    zip_path.unlink()
    return results_path, count


def _client(api_url: str, api_key: str | None) -> ApiClient:
    try:
        return ApiClient(api_url, resolve_api_key(api_key))
    except ApiClientError as exc:
        raise typer.BadParameter(str(exc)) from exc


def watch(batch_id: Annotated[str, typer.Argument(help="The batch's id.")],
          api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None) -> None:
    """Follow a batch with a progress bar: done/total, models, degraded, failures, ETA."""
    try:
        raise typer.Exit(watch_batch(_client(api_url, api_key), batch_id))
    except ApiClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None


def results(batch_id: Annotated[str, typer.Argument(help="The batch's id.")],
            out: Annotated[Path, typer.Option("-o", "--out", help="Directory to write into.")]
            = Path("."),
            api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None) -> None:
    """Download a batch's images (named by custom_id) and its results.jsonl."""
    try:
        path, count = download_results(_client(api_url, api_key), batch_id, out)
    except ApiClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    console.print(f"{count} images and {path.name} written to {out}")


def batches(limit: Annotated[int, typer.Option(help="How many to show.")] = 20,
            api_url: ApiUrl = DEFAULT_API_URL, api_key: ApiKey = None) -> None:
    """List your batches, newest first."""
    from storage.models import TERMINAL_STATUSES  # see ApiClient.wait

    client = _client(api_url, api_key)
    try:
        page = client._check(client.http.get("/v1/batches", params={"limit": limit}))
    except ApiClientError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    table = Table("id", "status", "done/total", "failed", "degraded", "cost $", "created",
                  box=None, pad_edge=False)
    for b in page["data"]:
        c = b["request_counts"]
        done = sum(c[status] for status in TERMINAL_STATUSES)
        table.add_row(b["id"], b["status"], f"{done}/{c['total']}", str(c["failed"]),
                      str(b["degraded"]), f"{b['cost_usd']:.2f}", b["created_at"][:19])
    console.print(table)


def register(app: typer.Typer) -> None:
    for command in (watch, results, batches):
        app.command()(command)
