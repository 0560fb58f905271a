"""What the outage benchmark compares: the designs (their environment), the scenarios (the fault
on the simulator, how jobs are released, for how long) and the breaker settings they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from providers.catalogue import load_catalogue

BAD_MODEL = "gemini-3-pro-image-preview"  # the head of the default route
THREADS = 4  # per worker process, imagequeue's and LiteLLM's alike
LATENCY = {"median_s": 0.15, "sigma": 0.1}  # every model's latency at the simulator
# The healthy start's: long beside the stack's own ~40 ms per job, so that 16 threads can all be
# in a call at once and the ramp to full concurrency is the gate's, not the stack's.
HEALTHY_LATENCY = {"median_s": 1.0, "sigma": 0.05}
BREAKER_ENV = {
    "IMGQ_BREAKER_WINDOW_S": "10", "IMGQ_BREAKER_MINIMUM_CALLS": "4",
    "IMGQ_BREAKER_OPEN_DURATION_S": "10", "IMGQ_BREAKER_HALF_OPEN_PROBES": "2",
    "IMGQ_VENDOR_SLOT_WAIT_S": "0.5", "IMGQ_PARK_BACKOFF_S": "0.5", "IMGQ_JOB_DEADLINE_S": "120",
}
# LiteLLM's Router, set as close to the breaker as its options allow.
LITELLM_ROUTER = {"allowed_fails": 3, "cooldown_time": 10, "num_retries": 0}


@dataclass(frozen=True)
class Design:
    name: str
    env: dict[str, str] = field(default_factory=dict)  # imagequeue's; empty for LiteLLM
    litellm_redis: bool | None = None  # LiteLLM's Router: with its Redis cache or without

    @property
    def is_litellm(self) -> bool:
        return self.litellm_redis is not None


DESIGNS: dict[str, Design] = {d.name: d for d in (
    Design("gated", {"IMGQ_BREAKER_MODE": "shared", "IMGQ_BREAKER_GATE": "true"}),
    Design("shared", {"IMGQ_BREAKER_MODE": "shared", "IMGQ_BREAKER_GATE": "false"}),
    Design("local", {"IMGQ_BREAKER_MODE": "local"}),
    Design("off", {"IMGQ_BREAKER_MODE": "off"}),
    Design("litellm", litellm_redis=False),
    Design("litellm+redis", litellm_redis=True),
)}


@dataclass(frozen=True)
class Scenario:
    """``fault``: the bad model's outcome (None: healthy), from ``fault_start_s`` to
    ``fault_end_s`` on the simulator's clock, which starts when the jobs are released.
    ``burst_per_process``: that many jobs per worker process released at once; otherwise
    ``rate_per_s`` jobs a second for ``duration_s``."""

    name: str
    title: str
    processes: tuple[int, ...]
    fault: str | None = None
    fault_start_s: float = 0.0
    fault_end_s: float = 3600.0
    burst_per_process: int = 0
    rate_per_s: float = 0.0
    duration_s: float = 0.0
    bad_timeout_s: float | None = None  # the bad model's call timeout, if not the catalogue's
    extra: str = ""  # the scenario's own column
    only: tuple[str, ...] = ()  # the designs it is run for, if not every one asked for
    latency: dict[str, float] = field(default_factory=lambda: dict(LATENCY))  # every model's

    def describe(self) -> str:
        return self.title.format(burst=self.burst_per_process)

    def job_offsets(self, processes: int) -> list[float]:
        """When each job is released, in seconds after the start."""
        if self.burst_per_process:
            return [0.0] * (self.burst_per_process * processes)
        return [k / self.rate_per_s for k in range(int(self.rate_per_s * self.duration_s))]

    def outage(self) -> dict[str, Any] | None:
        if self.fault is None:
            return None
        return {"start_s": self.fault_start_s, "end_s": self.fault_end_s, "kind": self.fault,
                "rate": 1.0}


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("a", "first model dead (100 % 503) from the start, a burst of {burst} jobs per process",
             (1, 2, 4), fault="overloaded", burst_per_process=50),
    Scenario("b", "first model healthy 5 s, 100 % 503 for 30 s, healthy again; 8 jobs/s for 45 s",
             (4,), fault="overloaded", fault_start_s=5.0, fault_end_s=35.0, rate_per_s=8.0,
             duration_s=45.0, extra="recovery s"),
    Scenario("c", "first model hangs for 30 s (timeout 10 s); 4 jobs/s for 30 s", (4,),
             fault="hang", fault_start_s=0.0, fault_end_s=30.0, rate_per_s=4.0,
             duration_s=30.0, bad_timeout_s=10.0, extra="slot-s lost"),
    Scenario("healthy", "no fault, every model 1 s, a burst of {burst} jobs per process", (4,),
             burst_per_process=50, extra="to 16 calls in flight", only=("gated", "shared", "litellm"),
             latency=HEALTHY_LATENCY),
)}


def default_route() -> list[str]:
    """imagequeue's default route, model ids in order."""
    return list(load_catalogue(None).routes["default"].models)


def wire_names() -> dict[str, str]:
    """Each model id of the default route -> the name its calls carry to the simulator (its
    vendor model), which is also the name LiteLLM's deployments send through the aggregator."""
    catalogue = load_catalogue(None)
    return {model_id: catalogue.models[model_id].vendor_model for model_id in default_route()}
