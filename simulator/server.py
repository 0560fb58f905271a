"""Running the simulator under uvicorn, and its command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from simulator.app import create_app
from simulator.profile import BUILTIN_PROFILES, ProfileError, load_profile

# `hang` calls sleep for minutes; shutting down must not wait for them.
GRACEFUL_SHUTDOWN_S = 1


def serve(
    host: str,
    port: int,
    profile: str | Path = "healthy",
    latency_scale: float | None = None,
    seed: int | None = None,
) -> None:
    """Serve the simulator until interrupted (blocking)."""
    loaded = load_profile(profile)
    if latency_scale is not None:
        loaded = loaded.with_latency_scale(latency_scale)
    app = create_app(loaded, seed=seed)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        backlog=4096,
    )
    uvicorn.Server(config).run()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="HTTP stand-in for the image vendors, following a failure profile.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--profile", default="healthy",
                        help=f"built-in ({', '.join(sorted(BUILTIN_PROFILES))}) or .json/.toml")
    parser.add_argument("--latency-scale", type=float, default=None,
                        help="multiply every latency (e.g. 0.05 for a fast demo)")
    parser.add_argument("--seed", type=int, default=None, help="seed for outcomes and latencies")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, args.profile, args.latency_scale, args.seed)
    except ProfileError as exc:
        parser.error(str(exc))
