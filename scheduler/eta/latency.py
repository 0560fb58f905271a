"""Lognormal service-time model of one image model, for the ETA forward simulation.

Image-generation latencies are right-skewed (most calls near the median, a long tail of slow
ones), which a lognormal captures with two numbers: ``mu`` and ``sigma`` of ``ln(latency_s)``.
``sigma == 0`` is allowed and means a fixed duration (useful for baselines and hand-worked tests).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["DEFAULT_SIGMA", "MIN_FIT_SAMPLES", "LatencyModel", "fit_lognormal"]

DEFAULT_SIGMA = 0.35
"""Spread assumed for a model with no history: p90 is about 1.6x the median."""

MIN_FIT_SAMPLES = 5

_STANDARD_NORMAL = NormalDist()
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_normal_survival(x: float) -> float:
    """ln P(Z > x) for a standard normal Z, accurate far into the upper tail."""
    if x < 30.0:
        return math.log(0.5 * math.erfc(x / math.sqrt(2.0)))
    # Mills-ratio asymptotic series: erfc underflows near x = 38.
    inv_x2 = 1.0 / (x * x)
    series = 1.0 - inv_x2 * (1.0 - 3.0 * inv_x2 * (1.0 - 5.0 * inv_x2 * (1.0 - 7.0 * inv_x2)))
    return -0.5 * x * x - math.log(x) - _LOG_SQRT_2PI + math.log(series)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Lognormal latency: ``ln(latency_s) ~ Normal(mu, sigma)``."""

    mu: float
    sigma: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.mu) or not math.isfinite(self.sigma) or self.sigma < 0.0:
            raise ValueError(f"invalid lognormal parameters mu={self.mu} sigma={self.sigma}")

    @classmethod
    def from_median(cls, median_s: float, sigma: float = DEFAULT_SIGMA) -> LatencyModel:
        """A model from a baseline median (the catalogue's figure), for a model with no history."""
        if median_s <= 0.0:
            raise ValueError(f"median_s must be positive, got {median_s}")
        return cls(mu=math.log(median_s), sigma=sigma)

    @classmethod
    def fixed(cls, duration_s: float) -> LatencyModel:
        """A degenerate model: every call takes exactly ``duration_s``."""
        return cls.from_median(duration_s, sigma=0.0)

    @property
    def median_s(self) -> float:
        return math.exp(self.mu)

    @property
    def mean_s(self) -> float:
        return math.exp(self.mu + 0.5 * self.sigma * self.sigma)

    def sample(self, rng: random.Random) -> float:
        """One latency draw in seconds."""
        if self.sigma == 0.0:
            return self.median_s
        return math.exp(self.mu + self.sigma * rng.gauss(0.0, 1.0))

    def survival(self, elapsed_s: float) -> float:
        """P(latency > elapsed_s)."""
        if elapsed_s <= 0.0:
            return 1.0
        if self.sigma == 0.0:
            return 1.0 if elapsed_s < self.median_s else 0.0
        return math.exp(_log_normal_survival((math.log(elapsed_s) - self.mu) / self.sigma))

    def remaining_mean_s(self, elapsed_s: float) -> float:
        """E[S - e | S > e]: expected time still to run for a call already ``elapsed_s`` old.

        Closed form: E[S | S > e] = exp(mu + sigma^2 / 2) * Q(z - sigma) / Q(z) with
        z = (ln e - mu) / sigma and Q the standard normal survival, evaluated in logs so that
        calls far past their usual latency still get a finite, growing answer. A fixed-duration
        model that has overrun is assumed to be about to finish (0).
        """
        if elapsed_s <= 0.0:
            return self.mean_s
        if self.sigma == 0.0:
            return max(self.median_s - elapsed_s, 0.0)
        z = (math.log(elapsed_s) - self.mu) / self.sigma
        log_tail_mean = (
            self.mu
            + 0.5 * self.sigma * self.sigma
            + _log_normal_survival(z - self.sigma)
            - _log_normal_survival(z)
        )
        return max(math.exp(log_tail_mean) - elapsed_s, 0.0)

    def sample_remaining(self, elapsed_s: float, rng: random.Random) -> float:
        """One draw of S - e given S > e (inverse CDF on the conditional upper tail)."""
        if elapsed_s <= 0.0:
            return self.sample(rng)
        if self.sigma == 0.0:
            return max(self.median_s - elapsed_s, 0.0)
        tail_probability = self.survival(elapsed_s) * (1.0 - rng.random())
        if not 0.0 < tail_probability < 1.0:
            # Beyond float resolution at either end: fall back to the expected remainder.
            return self.remaining_mean_s(elapsed_s)
        z = -_STANDARD_NORMAL.inv_cdf(tail_probability)
        return max(math.exp(self.mu + self.sigma * z) - elapsed_s, 0.0)


def fit_lognormal(
    samples_s: Sequence[float],
    *,
    min_samples: int = MIN_FIT_SAMPLES,
    fallback: LatencyModel | None = None,
) -> LatencyModel | None:
    """Maximum-likelihood lognormal from observed latencies (mean and std of their logs).

    Non-positive or non-finite samples are ignored. With fewer than ``min_samples`` usable ones
    the fit would be noise, so ``fallback`` (by default None) is returned instead.
    """
    logs = [math.log(s) for s in samples_s if s > 0.0 and math.isfinite(s)]
    if len(logs) < max(min_samples, 1):
        return fallback
    mu = math.fsum(logs) / len(logs)
    variance = math.fsum((x - mu) ** 2 for x in logs) / len(logs)
    return LatencyModel(mu=mu, sigma=math.sqrt(variance))
