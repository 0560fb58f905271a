"""Gradio's queue ETA estimator, the comparison row of the ETA benchmarks: a running mean of
service time, and start = time until a slot frees + rank x mean / slots. Blind to routes and
failure rates."""

from __future__ import annotations

import math


def gradio_estimate(
    position: int, slots: int, mean_service_s: float, time_until_slot_free_s: float
) -> tuple[float, float]:
    """Gradio's estimate of (start_s, finish_s): the next free slot, then rank x mean / slots.

    No slots: ``(inf, inf)``.
    """
    if slots <= 0:
        return math.inf, math.inf
    start_s = time_until_slot_free_s + position * mean_service_s / slots
    return start_s, start_s + mean_service_s
