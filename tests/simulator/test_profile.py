"""Failure profiles, outages, the call log and statistics, and Unicode prompts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from simulator.outcomes import Kind
from simulator.profile import ProfileError, load_profile
from simulator.state import Decision
from simulator.vendors.common import serve_call
from tests.simulator.test_vendors import BEARER, post

MODEL = "gpt-image-1.5"


def generate(sim: str, prompt: str = "a cat", model: str = MODEL) -> httpx.Response:
    return post(f"{sim}/openai/v1/images/generations",
                {"model": model, "prompt": prompt, "size": "1024x1024"}, BEARER)


def put_profile(sim: str, profile: dict[str, Any]) -> httpx.Response:
    return httpx.put(f"{sim}/_sim/profile", json=profile, timeout=5)


def test_outage_fails_every_call_inside_its_window_and_none_outside(simulator: str) -> None:
    start_s, end_s = 0.6, 1.2
    outage = {"model": MODEL, "start_s": start_s, "end_s": end_s, "kind": "overloaded"}
    sent_at = time.monotonic()
    httpx.post(f"{simulator}/_sim/outage", json=outage, timeout=5).raise_for_status()
    answered_at = time.monotonic()

    # Each call lands on the outage clock somewhere in [earliest, latest]; only calls known to be
    # wholly before, inside or after the window are judged, so a slow machine cannot flake this.
    seen: dict[str, list[int]] = {"before": [], "inside": [], "after": []}
    while time.monotonic() - sent_at < end_s + 0.5:
        t0 = time.monotonic()
        status = generate(simulator).status_code
        earliest, latest = t0 - answered_at, time.monotonic() - sent_at
        if latest < start_s:
            seen["before"].append(status)
        elif start_s < earliest and latest < end_s:
            seen["inside"].append(status)
        elif end_s < earliest:
            seen["after"].append(status)
        time.sleep(0.05)

    assert all(seen.values()), f"too few calls judged: {seen}"
    assert set(seen["before"]) == {200}
    assert set(seen["inside"]) == {503}
    assert set(seen["after"]) == {200}


def test_outage_touches_only_its_model(simulator: str) -> None:
    httpx.post(f"{simulator}/_sim/outage", json={"model": MODEL, "end_s": 60},
               timeout=5).raise_for_status()

    assert generate(simulator).status_code == 503
    assert generate(simulator, model="gpt-image-1").status_code == 200


def test_error_mix_follows_the_profile_probabilities(simulator: str) -> None:
    put_profile(simulator, {"models": {MODEL: {"latency": {"median_s": 0.001, "sigma": 0},
                                               "errors": {"quota": 1.0}},
                                       "default": {"latency": {"median_s": 0.001}}}})

    assert {generate(simulator).status_code for _ in range(5)} == {429}
    assert generate(simulator, model="gpt-image-1").status_code == 200


def test_call_log_and_stats_record_calls_outcomes_and_peak_concurrency(simulator: str) -> None:
    put_profile(simulator, {"models": {"default": {"latency": {"median_s": 0.5, "sigma": 0}}}})

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": MODEL, "prompt": "a cat", "size": "1024x1024"}
            url = f"{simulator}/openai/v1/images/generations"
            responses = await asyncio.gather(
                *(client.post(url, json=body, headers=BEARER) for _ in range(10)))
            return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 10
    generate(simulator, "a cat [sim:overloaded]")

    stats = httpx.get(f"{simulator}/_sim/stats", timeout=5).json()[MODEL]
    assert stats == {"calls": 11, "outcomes": {"ok": 10, "overloaded": 1},
                     "peak_concurrency": 10, "in_flight": 0}
    calls = httpx.get(f"{simulator}/_sim/calls", params={"model": MODEL, "since_seq": 10},
                      timeout=5).json()["calls"]
    assert [(c["seq"], c["outcome"], c["http_status"]) for c in calls] == [(11, "overloaded", 503)]
    assert calls[0]["vendor"] == "openai" and calls[0]["finished_at"] >= calls[0]["started_at"]


def test_reset_clears_the_log_and_restores_the_startup_profile(simulator: str) -> None:
    put_profile(simulator, {"name": "broken", "models": {"default": {"errors": {"auth": 1.0}}}})
    generate(simulator)

    httpx.post(f"{simulator}/_sim/reset", timeout=5).raise_for_status()

    assert httpx.get(f"{simulator}/_sim/calls", timeout=5).json() == {"calls": []}
    assert httpx.get(f"{simulator}/_sim/profile", timeout=5).json()["name"] == "healthy"
    assert generate(simulator).status_code == 200


@pytest.mark.parametrize(("profile", "reason"), [
    ({"models": {"x": {"errors": {"meltdown": 0.1}}}}, "unknown outcome 'meltdown'"),
    ({"models": {"x": {"errors": {"overloaded": 0.7, "quota": 0.6}}}}, "sum to 1.300 > 1"),
    ({"models": {"x": {"latency": {"median_s": -1}}}}, "median_s"),
    ({"models": {"x": {"outages": [{"start_s": 9, "end_s": 3}]}}}, "must be after start_s"),
    ({"modles": {}}, "unknown keys ['modles']"),
])
def test_a_bad_profile_is_refused_with_a_readable_reason(
    simulator: str, profile: dict[str, Any], reason: str
) -> None:
    response = put_profile(simulator, profile)

    assert response.status_code == 422
    assert reason in response.json()["detail"]


def test_peak_hours_profile_loads_with_realistic_latencies() -> None:
    profile = load_profile("peak-hours")

    gemini_pro = profile.for_model("gemini-3-pro-image-preview")
    assert gemini_pro.latency.median_s == 12.0
    assert 0.4 <= sum(gemini_pro.errors.values()) <= 0.5
    assert profile.for_model("flux-2-pro").errors == {}
    assert profile.with_latency_scale(0.05).latency_scale == 0.05


def test_profiles_load_from_json_and_toml_files(tmp_path: Path) -> None:
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps({"models": {"m": {"errors": {"overloaded": 0.5}}}}))
    as_toml = tmp_path / "p.toml"
    as_toml.write_text('latency_scale = 0.1\n[models.m.latency]\nmedian_s = 2.0\n')

    assert load_profile(as_json).for_model("m").errors
    assert load_profile(as_toml).for_model("m").latency.median_s == 2.0
    with pytest.raises(ProfileError, match="no built-in profile or file"):
        load_profile("no-such-profile")


def test_unicode_prompts_round_trip(simulator: str) -> None:
    prompt = "富士山と桜、夕焼け 🌸🗻 — café"
    assert generate(simulator, prompt).status_code == 200
    bfl = post(f"{simulator}/bfl/v1/flux-2-pro", {"prompt": prompt}, {"x-key": "k"}).json()

    deadline = time.monotonic() + 5
    result: dict[str, Any] = {}
    while time.monotonic() < deadline and result.get("status") != "Ready":
        result = httpx.get(bfl["polling_url"], headers={"x-key": "k"}, timeout=5).json()
    logged = [c["prompt"] for c in httpx.get(f"{simulator}/_sim/calls", timeout=5).json()["calls"]]
    assert logged == [prompt, prompt]
    assert result["result"]["prompt"] == prompt


def test_a_forced_outcome_works_inside_a_unicode_prompt(simulator: str) -> None:
    assert generate(simulator, "猫 🐱 [sim:content_policy] 猫").status_code == 400


def test_a_call_answers_after_its_latency_with_the_image_made_meanwhile() -> None:
    """A vendor's latency includes making the image: rendering must not add to it."""

    class FakeCall:
        decision = Decision(Kind.OK, None, 0.3)
        statuses: list[int | None] = []

        def finish(self, status: int | None) -> None:
            self.statuses.append(status)

    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        rendering_began: list[float] = []

        async def respond(decision: Decision) -> Response:
            rendering_began.append(loop.time() - began)
            await asyncio.sleep(0.1)  # rendering
            return Response(status_code=200)

        call: Any = FakeCall()
        response = await serve_call(call, request=None, respond=respond)  # type: ignore[arg-type]
        assert response.status_code == 200 and call.statuses == [200]
        return rendering_began[0], loop.time() - began

    rendering_began_s, answered_s = asyncio.run(scenario())
    assert rendering_began_s < 0.1  # not after the 0.3 s latency
    assert 0.3 <= answered_s < 0.39  # the latency, not latency + rendering
