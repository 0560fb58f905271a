"""The simulator as the outage benchmark drives it: the fault of a scenario on the bad model's
wire names (imagequeue's call and LiteLLM's through the aggregator hit the same entry), the call
log of those names, and the catalogue with the bad model's timeout."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.outage.figures import Call
from benchmarks.outage.plan import Scenario
from cli.lab.stack import fast_catalogue
from providers.catalogue import load_catalogue


def start_scenario(simulator_url: str, scenario: Scenario, bad_names: Iterable[str]) -> float:
    """A fresh call log and the scenario's profile: every model answers in the scenario's
    latency, the bad model's names have the scenario's fault. Returns the epoch time at which
    the simulator's outage clock started (its ``start_s``/``end_s`` count from there)."""
    httpx.post(f"{simulator_url}/_sim/reset", timeout=5).raise_for_status()
    models: dict[str, Any] = {"default": {"latency": scenario.latency}}
    outage = scenario.outage()
    for name in bad_names:
        models[name] = {"latency": scenario.latency, "outages": [outage] if outage else []}
    started_s = time.time()
    httpx.put(f"{simulator_url}/_sim/profile", json={"models": models},
              timeout=5).raise_for_status()
    return started_s


def calls_to(simulator_url: str, names: Iterable[str]) -> list[Call]:
    """The call log of these model names, oldest first."""
    calls: list[Call] = []
    for name in set(names):
        reply = httpx.get(f"{simulator_url}/_sim/calls", params={"model": name}, timeout=10)
        calls.extend(reply.json()["calls"])
    return sorted(calls, key=lambda c: c["started_at"])


def all_calls(simulator_url: str) -> list[Call]:
    return list(httpx.get(f"{simulator_url}/_sim/calls", timeout=10).json()["calls"])


def catalogue_for(directory: Path, bad_model: str, bad_timeout_s: float | None) -> Path:
    """The fast catalogue (no vendor cap that binds) with ``bad_model``'s call timeout set."""
    path = fast_catalogue(directory, cap=64)
    if bad_timeout_s is None:
        return path
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition(f'id = "{bad_model}"\n')
    block, nxt, tail = rest.partition("[[models]]")
    block = re.sub(r"(?m)^timeout_s = [\d.]+", f"timeout_s = {bad_timeout_s}", block)
    path.write_text(head + sep + block + nxt + tail, encoding="utf-8")
    return path


def model_timeouts(catalogue: Path, models: Iterable[str]) -> dict[str, float]:
    loaded = load_catalogue(catalogue)
    return {m: loaded.models[m].timeout_s for m in models}
