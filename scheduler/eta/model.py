"""What the ETA forward simulation knows: each model's estimate and vendor limits, running jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from scheduler.eta.latency import LatencyModel

Route = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VendorLimit:
    """A model's vendor limits as the workers enforce them (see ``workers.admission``).

    ``recent_starts_s``: when calls already admitted started, in seconds relative to the forecast
    (<= 0); those within the last ``window_s`` still hold rate tokens.
    """

    calls_per_window: int
    window_s: float
    max_concurrency: int
    slot_wait_s: float = 0.0
    recent_starts_s: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.calls_per_window < 1 or self.max_concurrency < 1:
            raise ValueError("calls_per_window and max_concurrency must be >= 1")
        if self.window_s <= 0.0 or self.slot_wait_s < 0.0:
            raise ValueError("need window_s > 0 and slot_wait_s >= 0")


@dataclass(frozen=True, slots=True)
class ModelEstimate:
    """What the simulation knows of one model right now."""

    model: str
    success_latency: LatencyModel
    failure_rate: float
    failure_latency_s: float
    limit: VendorLimit | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"{self.model}: failure_rate {self.failure_rate} is not in [0, 1]")
        if self.failure_latency_s < 0.0:
            raise ValueError(f"{self.model}: failure_latency_s must be >= 0")

    @property
    def skipped(self) -> bool:
        """The router skips it without a call (an open breaker): no vendor limit is touched."""
        return self.failure_rate >= 1.0 and self.failure_latency_s == 0.0

    @property
    def mean_attempt_s(self) -> float:
        """Expected duration of one attempt, failed or not."""
        f = self.failure_rate
        return f * self.failure_latency_s + (1.0 - f) * self.success_latency.mean_s


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job in a worker slot, ``elapsed_s`` into its attempt on ``route[model_index]``."""

    elapsed_s: float
    route: Route
    model_index: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.model_index < len(self.route):
            raise ValueError(f"model_index {self.model_index} outside route {self.route}")
        if self.elapsed_s < 0.0:
            raise ValueError(f"elapsed_s must be >= 0, got {self.elapsed_s}")


def expected_service_s(route: Route, models: Mapping[str, ModelEstimate]) -> float:
    """Mean slot time of a fresh job on ``route``: the attempts weighted by reaching them."""
    check_route(route, models)
    total_s = 0.0
    reach_probability = 1.0
    for name in route:
        estimate = models[name]
        total_s += reach_probability * estimate.mean_attempt_s
        reach_probability *= estimate.failure_rate
    return total_s


def check_route(route: Route, models: Mapping[str, ModelEstimate]) -> None:
    if not route:
        raise ValueError("a route needs at least one model")
    unknown = [name for name in route if name not in models]
    if unknown:
        raise ValueError(f"no estimate for model(s) {unknown} on route {route}")
