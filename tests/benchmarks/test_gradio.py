"""Gradio's ETA estimator, the ETA benchmarks' comparison row, against hand-worked queues."""

from __future__ import annotations

import math

import pytest

from benchmarks.gradio import gradio_estimate


def test_gradio_estimate_hand_worked() -> None:
    # Position 5, two slots, 10 s mean service, the next slot frees in 3 s.
    start_s, finish_s = gradio_estimate(5, 2, 10.0, 3.0)

    assert start_s == pytest.approx(3.0 + 5 * 10.0 / 2)
    assert finish_s == pytest.approx(start_s + 10.0)


def test_no_slots_means_no_estimate() -> None:
    assert gradio_estimate(3, 0, 5.0, 0.0) == (math.inf, math.inf)
