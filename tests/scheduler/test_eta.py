"""The ETA forward simulation, checked against hand-worked queues and independent computations."""

from __future__ import annotations

import json
import math
import random
from statistics import NormalDist

import pytest

from scheduler.eta.forecast import (
    EtaCurve,
    LatencyModel,
    ModelEstimate,
    RunningJob,
    VendorLimit,
    expected_service_s,
    fit_lognormal,
    forecast,
)


def fixed_model(
    name: str, duration_s: float, failure_rate: float = 0.0, failure_s: float = 1.0
) -> ModelEstimate:
    return ModelEstimate(name, LatencyModel.fixed(duration_s), failure_rate, failure_s)


def starts(curve: EtaCurve, positions: range) -> list[float]:
    return [curve.at(p)[0] for p in positions]


def finishes(curve: EtaCurve, positions: range) -> list[float]:
    return [curve.at(p)[1] for p in positions]


# --- the queue on fixed durations -------------------------------------------------------------


def test_one_empty_slot_starts_each_position_after_the_ones_before_it() -> None:
    duration_s = 2.5
    models = {"a": fixed_model("a", duration_s)}

    curve = forecast(1, [], ("a",), models, exact_positions=20)

    positions = range(20)
    assert starts(curve, positions) == pytest.approx([p * duration_s for p in positions])
    assert finishes(curve, positions) == pytest.approx([(p + 1) * duration_s for p in positions])


def test_a_busy_slot_shifts_every_start_by_the_running_jobs_remaining_time() -> None:
    running_duration_s, elapsed_s, waiting_duration_s = 5.0, 3.0, 4.0
    models = {
        "slow": fixed_model("slow", running_duration_s),
        "a": fixed_model("a", waiting_duration_s),
    }
    running = [RunningJob(elapsed_s=elapsed_s, route=("slow",))]

    curve = forecast(1, running, ("a",), models, exact_positions=10)

    remaining_s = running_duration_s - elapsed_s
    positions = range(10)
    assert starts(curve, positions) == pytest.approx(
        [remaining_s + p * waiting_duration_s for p in positions]
    )


def test_two_slots_hand_worked_starts() -> None:
    # Slot 1 frees at 1 s (a 3 s job 2 s in); slot 2 is free. Waiting jobs take 4 s each:
    # p0 slot 2 [0, 4]; p1 slot 1 [1, 5]; p2 slot 2 [4, 8]; p3 slot 1 [5, 9]; p4 slot 2 [8, 12].
    models = {"r": fixed_model("r", 3.0), "w": fixed_model("w", 4.0)}
    running = [RunningJob(elapsed_s=2.0, route=("r",))]

    curve = forecast(2, running, ("w",), models, exact_positions=5)

    assert starts(curve, range(5)) == pytest.approx([0.0, 1.0, 4.0, 5.0, 8.0])
    assert finishes(curve, range(5)) == pytest.approx([4.0, 5.0, 8.0, 9.0, 12.0])


def test_per_position_routes_are_simulated_in_queue_order_and_their_mix_repeats() -> None:
    # Two free slots; routes fast (1 s), slow (5 s), fast, fast, then the mix repeats from p4:
    # p0 [0, 1]; p1 [0, 5]; p2 [1, 2]; p3 [2, 3]; p4 fast [3, 4]; p5 slow [4, 9]; p6 fast [5, 6].
    models = {"fast": fixed_model("fast", 1.0), "slow": fixed_model("slow", 5.0)}
    routes = [("fast",), ("slow",), ("fast",), ("fast",)]

    curve = forecast(2, [], routes, models, exact_positions=7)

    assert starts(curve, range(7)) == pytest.approx([0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert finishes(curve, range(7)) == pytest.approx([1.0, 5.0, 2.0, 3.0, 4.0, 9.0, 6.0])
    assert curve.mean_service_s == pytest.approx((1.0 + 5.0 + 1.0 + 1.0) / 4)


def test_more_running_jobs_than_slots_queue_ahead_of_the_waiting_jobs() -> None:
    models = {"r": fixed_model("r", 10.0), "w": fixed_model("w", 1.0)}
    running = [RunningJob(8.0, ("r",)), RunningJob(7.0, ("r",))]  # 2 s and 3 s left, one slot

    curve = forecast(1, running, ("w",), models, exact_positions=3)

    assert curve.at(0)[0] == pytest.approx(2.0 + 3.0)


# --- failover along the route -----------------------------------------------------------------


def test_certain_failure_on_the_first_model_costs_its_failure_latency_then_the_second() -> None:
    failure_s, second_s = 1.5, 10.0
    models = {"a": fixed_model("a", 20.0, failure_rate=1.0, failure_s=failure_s),
              "b": fixed_model("b", second_s)}

    curve = forecast(1, [], ("a", "b"), models, exact_positions=5)

    service_s = failure_s + second_s
    assert expected_service_s(("a", "b"), models) == pytest.approx(service_s)
    assert starts(curve, range(5)) == pytest.approx([p * service_s for p in range(5)])
    assert curve.at(0)[1] == pytest.approx(service_s)


def test_half_failing_first_model_gives_the_mixture_mean_between_the_two_bounds() -> None:
    first_s, failure_s, second_s = 20.0, 2.0, 10.0
    models = {"a": fixed_model("a", first_s, failure_rate=0.5, failure_s=failure_s),
              "b": fixed_model("b", second_s)}
    fastest_s, slowest_s = failure_s + second_s, first_s
    mixture_s = 0.5 * first_s + 0.5 * (failure_s + second_s)

    curve = forecast(1, [], ("a", "b"), models, exact_positions=50, runs=400, seed=7)

    simulated_service_s = curve.at(0)[1] - curve.at(0)[0]
    assert fastest_s < simulated_service_s < slowest_s
    assert simulated_service_s == pytest.approx(mixture_s, rel=0.03)
    assert curve.mean_service_s == pytest.approx(mixture_s)
    assert curve.at(49)[0] == pytest.approx(49 * mixture_s, rel=0.03)


def test_a_failure_on_the_last_model_frees_the_slot_after_the_failure_latency() -> None:
    models = {"only": fixed_model("only", 30.0, failure_rate=1.0, failure_s=2.0)}

    curve = forecast(1, [], ("only",), models, exact_positions=3)

    assert starts(curve, range(3)) == pytest.approx([0.0, 2.0, 4.0])


def test_a_running_attempt_still_inside_the_failure_window_may_fail_over() -> None:
    # 0.5 s into an attempt on "a" (fails half the time after 1.5 s, else succeeds at 20 s):
    # a success cannot have ended yet, so P(fail) stays 0.5.
    # Remaining = 0.5 * (1.0 + 10.0) + 0.5 * (20.0 - 0.5).
    models = {"a": fixed_model("a", 20.0, failure_rate=0.5, failure_s=1.5),
              "b": fixed_model("b", 10.0)}
    running = [RunningJob(elapsed_s=0.5, route=("a", "b"), model_index=0)]

    curve = forecast(1, running, ("b",), models, exact_positions=1, runs=800, seed=3)

    expected_remaining_s = 0.5 * (1.0 + 10.0) + 0.5 * (20.0 - 0.5)
    assert curve.at(0)[0] == pytest.approx(expected_remaining_s, rel=0.05)


def test_a_running_attempt_past_the_failure_latency_is_known_to_be_succeeding() -> None:
    models = {"a": fixed_model("a", 20.0, failure_rate=0.9, failure_s=1.5),
              "b": fixed_model("b", 10.0)}
    running = [RunningJob(elapsed_s=6.0, route=("a", "b"), model_index=0)]

    curve = forecast(1, running, ("b",), models, exact_positions=1, runs=50)

    assert curve.at(0)[0] == pytest.approx(20.0 - 6.0)


def test_a_running_job_on_its_second_model_only_has_that_model_left() -> None:
    models = {"a": fixed_model("a", 20.0, failure_rate=1.0, failure_s=1.5),
              "b": fixed_model("b", 10.0)}
    running = [RunningJob(elapsed_s=4.0, route=("a", "b"), model_index=1)]

    curve = forecast(1, running, ("b",), models, exact_positions=1)

    assert curve.at(0)[0] == pytest.approx(10.0 - 4.0)


def test_random_latencies_average_to_the_mean_service_time_per_position() -> None:
    latency = LatencyModel.from_median(12.0, sigma=0.5)
    models = {"a": ModelEstimate("a", latency, 0.0, 1.0)}

    curve = forecast(2, [], ("a",), models, exact_positions=200, runs=64, seed=11)

    # Past the start-up, two slots start one job every mean / 2 seconds.
    slope_s = (curve.at(199)[0] - curve.at(99)[0]) / 100
    assert slope_s == pytest.approx(latency.mean_s / 2, rel=0.05)


# --- extrapolation, edge cases and the published form ------------------------------------------


def test_positions_beyond_the_simulated_ones_grow_linearly_at_mean_service_over_slots() -> None:
    models = {
        "a": fixed_model("a", 6.0, failure_rate=0.25, failure_s=2.0),
        "b": fixed_model("b", 4.0),
    }
    slots, exact = 3, 30

    curve = forecast(slots, [], ("a", "b"), models, exact_positions=exact)

    mean_service_s = expected_service_s(("a", "b"), models)
    slope_s = mean_service_s / slots
    last_start_s = curve.at(exact - 1)[0]
    for position in (exact, exact + 1, 500, 100_000):
        start_s, finish_s = curve.at(position)
        assert start_s == pytest.approx(last_start_s + (position - exact + 1) * slope_s)
        assert finish_s == pytest.approx(start_s + mean_service_s)
    assert curve.seconds_per_position == pytest.approx(slope_s)
    assert curve.slots == slots


def test_no_live_workers_means_no_eta() -> None:
    models = {"a": fixed_model("a", 5.0)}

    curve = forecast(0, [RunningJob(1.0, ("a",))], ("a",), models)

    assert not curve.available
    assert curve.at(0) == (math.inf, math.inf)
    assert curve.at(10_000) == (math.inf, math.inf)


def test_a_new_job_gets_the_eta_of_the_position_equal_to_the_queue_depth() -> None:
    models = {"a": fixed_model("a", 2.0)}
    routes = [("a",)] * 3

    per_position = forecast(1, [], routes, models, exact_positions=10)
    single_route = forecast(1, [], ("a",), models, exact_positions=10, queue_depth=0)

    assert per_position.queue_depth == len(routes)
    assert per_position.for_new_job() == per_position.at(len(routes))
    assert single_route.for_new_job() == pytest.approx((0.0, 2.0))  # empty queue: starts now


def test_the_curve_round_trips_through_json() -> None:
    latency = LatencyModel.from_median(9.0)
    models = {"a": ModelEstimate("a", latency, 0.3, 1.2), "b": fixed_model("b", 7.0)}
    running = [RunningJob(3.0, ("a", "b")), RunningJob(0.4, ("a", "b"))]
    curve = forecast(4, running, ("a", "b"), models, exact_positions=50, queue_depth=12,
                     dispatched=[("a", "b")] * 3)

    restored = EtaCurve.from_dict(json.loads(json.dumps(curve.to_dict(), allow_nan=False)))

    assert restored == curve
    assert restored.at(1_000) == curve.at(1_000)
    no_workers = forecast(0, [], ("a",), models)
    assert EtaCurve.from_dict(json.loads(json.dumps(no_workers.to_dict()))) == no_workers


def test_the_same_seed_gives_the_same_curve() -> None:
    models = {"a": ModelEstimate("a", LatencyModel.from_median(9.0), 0.3, 1.2),
              "b": fixed_model("b", 7.0)}

    first = forecast(3, [], ("a", "b"), models, exact_positions=20, seed=5)
    again = forecast(3, [], ("a", "b"), models, exact_positions=20, seed=5)
    other = forecast(3, [], ("a", "b"), models, exact_positions=20, seed=6)

    assert first == again
    assert first != other


def test_a_route_with_an_unknown_model_is_rejected() -> None:
    models = {"a": fixed_model("a", 5.0)}

    with pytest.raises(ValueError, match="missing"):
        forecast(1, [], ("a", "missing"), models)


# --- the latency model ------------------------------------------------------------------------


def remaining_mean_by_integration(mu: float, sigma: float, elapsed_s: float) -> float:
    """E[S - e | S > e] = integral of P(S > s) over s > e, divided by P(S > e) (Simpson's rule)."""
    normal = NormalDist()

    def survival(s: float) -> float:
        return 1.0 - normal.cdf((math.log(s) - mu) / sigma)

    # Substitute s = e * exp(t): ds = s dt; the tail is negligible past 12 sigma in log space.
    steps, t_max = 4000, 12.0 * sigma + abs(mu - math.log(elapsed_s))
    h = t_max / steps
    total = 0.0
    for i in range(steps + 1):
        s = elapsed_s * math.exp(i * h)
        weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
        total += weight * survival(s) * s
    return total * h / 3 / survival(elapsed_s)


@pytest.mark.parametrize(("median_s", "sigma", "elapsed_s"), [(10.0, 1.0, 25.0), (20.0, 0.4, 5.0),
                                                              (8.0, 0.6, 30.0)])
def test_remaining_mean_matches_numerical_integration(
    median_s: float, sigma: float, elapsed_s: float
) -> None:
    latency = LatencyModel.from_median(median_s, sigma)

    expected_s = remaining_mean_by_integration(latency.mu, sigma, elapsed_s)

    assert latency.remaining_mean_s(elapsed_s) == pytest.approx(expected_s, rel=1e-4)


def test_remaining_mean_grows_with_elapsed_past_the_median_for_a_heavy_tail() -> None:
    latency = LatencyModel.from_median(10.0, sigma=1.5)

    remaining_s = [latency.remaining_mean_s(m * latency.median_s) for m in (2, 5, 20, 100)]

    assert all(r > 0 for r in remaining_s)
    assert remaining_s == sorted(remaining_s)
    assert latency.remaining_mean_s(0.0) == pytest.approx(latency.mean_s)


def test_remaining_mean_far_past_any_observed_latency_stays_finite_and_follows_the_tail() -> None:
    latency = LatencyModel.from_median(10.0, sigma=1.0)
    z = 40.0  # standard deviations past the median in log space: erfc underflows here
    elapsed_s = latency.median_s * math.exp(z * latency.sigma)

    # Mills-ratio limit: E[S | S > e] ~ e * z / (z - sigma).
    approximation_s = elapsed_s * latency.sigma / (z - latency.sigma)

    assert latency.remaining_mean_s(elapsed_s) == pytest.approx(approximation_s, rel=0.01)
    # Continuous across the switch from erfc to the asymptotic series (30 sigma).
    just_below = latency.remaining_mean_s(latency.median_s * math.exp(30.0 - 1e-9))
    just_above = latency.remaining_mean_s(latency.median_s * math.exp(30.0 + 1e-9))
    assert just_below == pytest.approx(just_above, rel=1e-6)


def test_conditional_samples_average_to_the_remaining_mean() -> None:
    latency = LatencyModel.from_median(10.0, sigma=0.8)
    rng = random.Random(1)
    elapsed_s = 18.0

    draws = [latency.sample_remaining(elapsed_s, rng) for _ in range(20_000)]

    assert min(draws) >= 0.0
    assert sum(draws) / len(draws) == pytest.approx(latency.remaining_mean_s(elapsed_s), rel=0.03)


def test_fit_lognormal_recovers_the_parameters_of_seeded_samples() -> None:
    mu, sigma = math.log(15.0), 0.45
    rng = random.Random(42)
    samples_s = [rng.lognormvariate(mu, sigma) for _ in range(3000)]

    fitted = fit_lognormal(samples_s)

    assert fitted is not None
    assert fitted.mu == pytest.approx(mu, abs=0.03)
    assert fitted.sigma == pytest.approx(sigma, abs=0.02)


def test_fit_lognormal_needs_enough_positive_samples() -> None:
    baseline = LatencyModel.from_median(20.0)

    assert fit_lognormal([10.0, 12.0, 9.0, 11.0]) is None
    assert fit_lognormal([10.0, 12.0, 0.0, -1.0, 11.0, 9.0], fallback=baseline) is baseline
    fitted = fit_lognormal([10.0] * 5)
    assert fitted is not None
    assert fitted.median_s == pytest.approx(10.0)
    assert fitted.sigma == pytest.approx(0.0)


# --- per-job slot overhead --------------------------------------------------------------------


def test_job_overhead_lengthens_every_waiting_jobs_slot_time() -> None:
    models = {"a": fixed_model("a", 2.0)}
    plain = forecast(1, [], ("a",), models, exact_positions=3, runs=1)
    slowed = forecast(1, [], ("a",), models, exact_positions=3, runs=1, job_overhead_s=0.5)
    assert starts(plain, range(3)) == [0.0, 2.0, 4.0]
    assert starts(slowed, range(3)) == [0.0, 2.5, 5.0]
    assert finishes(slowed, range(3)) == [2.5, 5.0, 7.5]
    assert slowed.mean_service_s == plain.mean_service_s + 0.5


def test_running_job_keeps_half_the_overhead_ahead_of_it() -> None:
    models = {"a": fixed_model("a", 2.0)}
    curve = forecast(1, [RunningJob(1.5, ("a",))], ("a",), models, exact_positions=1, runs=1,
                     job_overhead_s=1.0)
    assert curve.at(0)[0] == pytest.approx(0.5 + 0.5)


def test_negative_overhead_is_refused() -> None:
    with pytest.raises(ValueError, match="job_overhead_s"):
        forecast(1, [], ("a",), {"a": fixed_model("a", 1.0)}, job_overhead_s=-0.1)


# --- vendor limits ------------------------------------------------------------------------------


def limited_model(name: str, duration_s: float, limit: VendorLimit) -> ModelEstimate:
    return ModelEstimate(name, LatencyModel.fixed(duration_s), 0.0, 1.0, limit)


def test_a_spent_rate_budget_sends_jobs_on_to_the_next_model_of_the_route() -> None:
    # "a" takes 2 calls per 10 s window; waiting for a token is not allowed.
    limit = VendorLimit(calls_per_window=2, window_s=10.0, max_concurrency=8)
    models = {"a": limited_model("a", 4.0, limit), "b": fixed_model("b", 1.0)}
    curve = forecast(4, [], ("a", "b"), models, exact_positions=4, runs=1)
    # Two jobs get "a" (4 s), the other two skip it at once and take "b" (1 s).
    assert finishes(curve, range(4)) == [4.0, 4.0, 1.0, 1.0]


def test_calls_started_before_the_forecast_hold_the_rate_budget_until_they_age_out() -> None:
    limit = VendorLimit(calls_per_window=1, window_s=10.0, max_concurrency=8,
                        slot_wait_s=3.0, recent_starts_s=(-8.0,))
    models = {"a": limited_model("a", 4.0, limit), "b": fixed_model("b", 1.0)}
    curve = forecast(2, [], ("a", "b"), models, exact_positions=2, runs=1)
    # The token frees 2 s from now (within the 3 s wait): the first job waits, then calls "a";
    # the second finds it spent again for 10 s and goes to "b".
    assert finishes(curve, range(2)) == [6.0, 1.0]


def test_a_full_concurrency_cap_costs_the_slot_wait_then_the_next_model() -> None:
    limit = VendorLimit(calls_per_window=100, window_s=10.0, max_concurrency=1, slot_wait_s=0.5)
    models = {"a": limited_model("a", 4.0, limit), "b": fixed_model("b", 1.0)}
    curve = forecast(2, [], ("a", "b"), models, exact_positions=2, runs=1)
    assert finishes(curve, range(2)) == [4.0, 1.5]


def test_an_open_breaker_skips_the_model_without_spending_its_rate_budget() -> None:
    limit = VendorLimit(calls_per_window=1, window_s=10.0, max_concurrency=8)
    models = {"a": ModelEstimate("a", LatencyModel.fixed(4.0), 1.0, 0.0, limit),
              "b": fixed_model("b", 1.0)}
    curve = forecast(1, [], ("a", "b"), models, exact_positions=3, runs=1)
    assert finishes(curve, range(3)) == [1.0, 2.0, 3.0]


def test_the_tail_of_a_limited_queue_grows_at_the_limited_throughput() -> None:
    # One call to "a" per 100 s: past the first, every job is served by "b" in 1 s.
    limit = VendorLimit(calls_per_window=1, window_s=100.0, max_concurrency=8)
    models = {"a": limited_model("a", 10.0, limit), "b": fixed_model("b", 1.0)}
    curve = forecast(2, [], ("a", "b"), models, exact_positions=20, runs=1)
    assert curve.mean_service_s == pytest.approx(1.0)
    far_start_s, _ = curve.at(120)
    assert far_start_s == pytest.approx(curve.at(19)[0] + (120 - 19) * 0.5)


def test_vendor_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        VendorLimit(calls_per_window=0, window_s=10.0, max_concurrency=1)
    with pytest.raises(ValueError):
        VendorLimit(calls_per_window=1, window_s=0.0, max_concurrency=1)


def test_a_skewed_service_time_is_promised_near_its_median_not_its_mean() -> None:
    latency = LatencyModel.from_median(10.0, sigma=0.5)  # mean 11.3 s
    models = {"a": ModelEstimate("a", latency, 0.0, 0.0)}

    curve = forecast(1, [], ("a",), models, exact_positions=1, runs=2000, seed=1)

    finish_s = curve.at(0)[1]
    assert abs(finish_s - latency.median_s) < 0.5 < abs(finish_s - latency.mean_s)
    # The tail still grows at the mean: throughput is a sum, and sums follow the mean.
    assert curve.mean_service_s == pytest.approx(latency.mean_s)


def test_dispatched_jobs_take_the_next_slots_ahead_of_the_queue_and_get_their_own_etas() -> None:
    models = {"a": fixed_model("a", 3.0), "b": fixed_model("b", 1.0)}
    running = [RunningJob(elapsed_s=1.0, route=("a",))]  # 2 s left
    curve = forecast(2, running, ("b",), models, exact_positions=2, runs=1,
                     dispatched=[("a",), ("b",)])
    # Slot 1 is free: the first dispatched job starts now; the second when slot 2 frees (2 s).
    assert curve.dispatched_s == ((0.0, 3.0), (2.0, 3.0))
    assert [curve.at(p) for p in range(2)] == [(3.0, 4.0), (3.0, 4.0)]


def test_a_dispatched_job_meets_the_vendor_limits_like_a_waiting_one() -> None:
    # The one token of "a" is held by a call started 1 s ago: the dispatched job takes "b".
    limit = VendorLimit(calls_per_window=1, window_s=10.0, max_concurrency=8,
                        recent_starts_s=(-1.0,))
    models = {"a": limited_model("a", 4.0, limit), "b": fixed_model("b", 1.0)}
    curve = forecast(2, [], ("a", "b"), models, exact_positions=1, runs=1, dispatched=[("a", "b")])
    assert curve.dispatched_s == ((0.0, 1.0),)
