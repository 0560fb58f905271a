"""The status stream's shared document (built once per snapshot for any number of clients), and
the figures the status derives from the workers' latency samples."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from api.status import StatusFeed, latency_figures, served_per_minute
from scheduler.eta.telemetry import LATENCY_SAMPLES, LatencySample


class Builds:
    """A status source that counts its builds and can be held mid-build."""

    def __init__(self) -> None:
        self.count = 0
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()  # set once a build is under way
        self.fail: Exception | None = None

    def __call__(self) -> dict[str, Any]:
        self.started.set()
        self.release.wait(10)
        self.count += 1
        if self.fail is not None:
            raise self.fail
        return {"build": self.count}


def test_clients_woken_by_one_snapshot_share_one_build() -> None:
    builds = Builds()
    feed = StatusFeed(builds)

    async def scenario() -> None:
        texts = await asyncio.gather(*(feed.document(1, 60.0) for _ in range(500)))
        assert {json.loads(t)["build"] for t in texts} == {1}
        assert builds.count == 1
        await feed.document(1, 60.0)  # the same snapshot again: the same document
        assert builds.count == 1
        texts = await asyncio.gather(*(feed.document(2, 60.0) for _ in range(500)))
        assert {json.loads(t)["build"] for t in texts} == {2}  # the next snapshot: one more
        assert builds.count == 2

    asyncio.run(scenario())


def test_without_snapshots_a_document_is_reused_only_while_it_is_young() -> None:
    builds = Builds()
    feed = StatusFeed(builds)

    async def scenario() -> None:
        await feed.document(0, 60.0)
        await feed.document(0, 60.0)
        assert builds.count == 1
        await feed.document(0, 0.0)  # too old for this reader
        assert builds.count == 2

    asyncio.run(scenario())


def test_a_build_begun_before_the_snapshot_is_followed_by_a_fresh_one() -> None:
    builds = Builds()
    feed = StatusFeed(builds)

    async def scenario() -> None:
        builds.release.clear()
        early = asyncio.ensure_future(feed.document(1, 60.0))
        assert await asyncio.to_thread(builds.started.wait, 10)  # snapshot 1's build, held
        late = asyncio.ensure_future(feed.document(2, 60.0))  # woken by snapshot 2
        await asyncio.sleep(0)  # let it ask before the held build ends
        builds.release.set()
        assert json.loads(await early)["build"] == 1
        assert json.loads(await late)["build"] == 2

    asyncio.run(scenario())


def test_a_failed_build_fails_every_waiting_client_and_the_next_ask_builds_again() -> None:
    builds = Builds()
    builds.fail = ConnectionError("redis down")
    feed = StatusFeed(builds)

    async def scenario() -> None:
        results = await asyncio.gather(*(feed.document(1, 60.0) for _ in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, ConnectionError) for r in results)
        assert builds.count == 1
        builds.fail = None
        assert json.loads(await feed.document(1, 60.0))["build"] == 2

    asyncio.run(scenario())


def test_a_client_that_leaves_does_not_cancel_the_others_build() -> None:
    builds = Builds()
    feed = StatusFeed(builds)

    async def scenario() -> None:
        builds.release.clear()
        leaving = asyncio.ensure_future(feed.document(1, 60.0))
        staying = asyncio.ensure_future(feed.document(1, 60.0))
        assert await asyncio.to_thread(builds.started.wait, 10)  # their one build, held
        leaving.cancel()
        builds.release.set()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        assert json.loads(await staying)["build"] == 1

    asyncio.run(scenario())


def test_jobs_served_per_minute_count_successes_over_five_minutes() -> None:
    now_s = 10_000.0
    first = [LatencySample(True, 1.0, now_s - k * 10) for k in range(40)]  # 31 within 300 s
    second = [LatencySample(False, 0.1, now_s - 5), LatencySample(True, 2.0, now_s - 20)]
    assert served_per_minute([first, second], now_s) == pytest.approx((31 + 1) / 5, abs=0.05)
    assert served_per_minute([[]], now_s) == 0.0


def test_a_full_sample_list_is_counted_over_the_span_it_covers() -> None:
    now_s = 10_000.0
    busy = [LatencySample(True, 0.5, now_s - k * 0.06) for k in range(LATENCY_SAMPLES)]
    # 1000 calls over the last 60 s: 1000 a minute, not 1000 per five minutes
    assert served_per_minute([busy], now_s) == pytest.approx(1000.0, rel=0.01)


def test_p50_is_of_the_last_successful_calls_against_the_baseline() -> None:
    rows = [LatencySample(True, 3.0, 1.0)] * 60 + [LatencySample(False, 0.1, 1.0)] * 5 \
        + [LatencySample(True, 1.0, 1.0)] * 100  # newest first: the 1 s calls are older
    figures = latency_figures(rows, 2.0)
    assert figures == {"p50_latency_s": 3.0, "p50_calls": 100, "baseline_latency_s": 2.0,
                       "p50_vs_baseline": 1.5}
    assert latency_figures([], 2.0)["p50_latency_s"] is None
