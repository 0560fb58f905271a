"""One machine, nothing to configure: Redis (a private one if needed), SQLite, the simulator when
vendor keys are missing, the API, worker(s) and the scheduler, each a child process."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from sqlalchemy import select

from cli.client import LOCAL_KEY_FILE
from cli.stack import Stack, free_port, python_module
from imagequeue.settings import Settings
from providers.catalogue import load_catalogue
from simulator.catalogue import write_simulator_catalogue
from storage.db import make_engine, make_sessionmaker, migrate
from storage.models import Tenant
from storage.tenants import create_tenant, tenant_for_api_key

console = Console(stderr=True)
SIMULATOR_CATALOGUE = Path("var/simulator-catalogue.json")  # the catalogue pointed at the simulator


def ensure_local_key(settings: Settings) -> str:
    """The local tenant's API key, created on first use and kept in var/local-api-key."""
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        if LOCAL_KEY_FILE.is_file():
            key = LOCAL_KEY_FILE.read_text().strip()
            with sessions() as session:
                if tenant_for_api_key(session, key) is not None:
                    return key
        with sessions.begin() as session:
            suffix = 1
            while True:
                name = "local" if suffix == 1 else f"local-{suffix}"
                if session.scalar(select(Tenant.id).where(Tenant.name == name)) is None:
                    break
                suffix += 1
            _, key = create_tenant(session, name)
        LOCAL_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        LOCAL_KEY_FILE.touch(mode=0o600)
        LOCAL_KEY_FILE.write_text(key + "\n")
        return key
    finally:
        engine.dispose()


def start_local_stack(settings: Settings, *, api_port: int, workers: int = 1,
                      profile: str = "healthy", latency_scale: float = 1.0,
                      log_dir: Path = Path("var/logs"),
                      child_env: dict[str, str] | None = None) -> tuple[Stack, dict[str, str]]:
    """``child_env`` adds settings for the children only (e.g. the demo's short breaker times)."""
    stack = Stack(log_dir)
    stack.env.update(child_env or {})
    try:
        redis_url = stack.ensure_redis(settings.redis_url)
        stack.env["IMGQ_REDIS_URL"] = redis_url
        migrate(settings.database_url)
        catalogue = load_catalogue(settings.catalogue_path)
        unkeyed = [m.id for m in catalogue.models.values() if not m.configured]
        info = {"redis_url": redis_url}
        if unkeyed:
            sim_port = free_port()
            stack.start("simulator", python_module(
                "simulator", "--host", "127.0.0.1", "--port", str(sim_port),
                "--profile", profile, "--latency-scale", str(latency_scale)))
            sim_url = f"http://127.0.0.1:{sim_port}"
            stack.wait_http("simulator", f"{sim_url}/_sim/health")
            pointed = write_simulator_catalogue(sim_url, SIMULATOR_CATALOGUE,
                                                source=settings.catalogue_path)
            stack.env["IMGQ_CATALOGUE_PATH"] = str(pointed.resolve())
            info["simulator_url"] = sim_url
            info["catalogue_path"] = str(pointed)
            console.print(
                f"[bold yellow]No API key for {', '.join(unkeyed)}: these models are served by "
                f"the built-in vendor SIMULATOR at {sim_url} (profile {profile!r}). "
                "Set the vendor keys (see `imgq models`) for real images.[/]")
        api_url = f"http://127.0.0.1:{api_port}"
        stack.env["IMGQ_PUBLIC_BASE_URL"] = api_url
        info["api_url"] = api_url
        info["api_key"] = ensure_local_key(settings)
        stack.start("api", python_module("uvicorn", "api.asgi:app", "--host", "127.0.0.1",
                                         "--port", str(api_port), "--log-level", "warning"))
        stack.wait_http("api", f"{api_url}/healthz")
        for k in range(1, workers + 1):
            stack.start(f"worker-{k}", python_module(
                "celery", "-A", "workers.celery_app", "worker", "-Q", "imgq", "-P", "threads",
                "-c", str(settings.worker_concurrency), "-n", f"worker-{k}@%h",
                "--loglevel", "INFO"))
        stack.start("scheduler", python_module("cli", "scheduler"))
        return stack, info
    except BaseException:
        stack.stop()
        raise
