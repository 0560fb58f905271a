"""The waiting index orders jobs the way workers will take them (real Redis)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis

from scheduler.queue.index import IndexEntry, WaitingIndex


@pytest.fixture()
def index(clean_redis: str) -> Iterator[WaitingIndex]:
    client = redis.Redis.from_url(clean_redis)
    yield WaitingIndex(client)
    client.close()


def drain(index: WaitingIndex) -> list[str]:
    order: list[str] = []
    while batch := index.pop_for_dispatch(3):
        order += batch
    return order


def test_interactive_before_bulk_and_higher_priority_first(index: WaitingIndex) -> None:
    index.push([IndexEntry("b1", "bulk", "t1"), IndexEntry("i1", "interactive", "t1"),
                IndexEntry("b2", "bulk", "t1", priority=5), IndexEntry("i2", "interactive", "t2"),
                IndexEntry("i3", "interactive", "t2", priority=3)])
    assert drain(index) == ["i3", "i1", "i2", "b2", "b1"]


def test_bulk_tenants_take_turns(index: WaitingIndex) -> None:
    index.push([IndexEntry(f"a{k}", "bulk", "big") for k in range(100)])
    index.push([IndexEntry(f"b{k}", "bulk", "small") for k in range(10)])
    order = drain(index)
    assert order[:20] == [x for k in range(10) for x in (f"a{k}", f"b{k}")]
    assert order[20:] == [f"a{k}" for k in range(10, 100)]


def test_an_idle_tenant_does_not_bank_credit(index: WaitingIndex) -> None:
    index.push([IndexEntry(f"a{k}", "bulk", "big") for k in range(40)])
    assert index.pop_for_dispatch(20) == [f"a{k}" for k in range(20)]
    index.push([IndexEntry(f"b{k}", "bulk", "late") for k in range(3)])
    # The late tenant starts at the round being served, not at round 0 ahead of everything.
    assert index.pop_for_dispatch(8) == ["b0", "a20", "b1", "a21", "b2", "a22", "a23", "a24"]


def test_positions_are_unique_and_match_dispatch_order(index: WaitingIndex) -> None:
    rng = random.Random(7)
    entries = [IndexEntry(f"j{k}", rng.choice(["interactive", "bulk"]), rng.choice("xyz"),
                          rng.randint(-2, 2)) for k in range(300)]
    for start in range(0, 300, 37):  # several producers' submissions
        index.push(entries[start:start + 37])
    positions = {e.job_id: index.position(e.job_id) for e in entries}
    assert sorted(positions.values()) == list(range(300))
    by_position = sorted(positions, key=lambda j: positions[j])  # type: ignore[arg-type,return-value]
    assert drain(index) == by_position


def test_position_counts_down_as_jobs_are_dispatched(index: WaitingIndex) -> None:
    index.push([IndexEntry(f"j{k}") for k in range(5)])
    seen = []
    while (position := index.position("j4")) is not None:
        seen.append(position)
        index.pop_for_dispatch(1)
    assert seen == [4, 3, 2, 1, 0]


def test_canceled_job_leaves_the_queue(index: WaitingIndex) -> None:
    index.push([IndexEntry("a"), IndexEntry("b"), IndexEntry("c")])
    assert index.remove("b")
    assert index.position("c") == 1
    assert index.depth() == 2
    assert not index.remove("b")


def test_parked_job_returns_to_its_place_when_due(index: WaitingIndex) -> None:
    index.push([IndexEntry("first"), IndexEntry("second")])
    assert index.pop_for_dispatch(1) == ["first"]
    index.park("first", not_before_ms=0)  # already due
    index.push([IndexEntry("third")])
    assert index.position("first") is None
    assert index.promote_due() == 1
    assert [index.position(j) for j in ("first", "second", "third")] == [0, 1, 2]


def test_parked_job_waits_until_its_time(index: WaitingIndex) -> None:
    index.push([IndexEntry("j")])
    index.pop_for_dispatch(1)
    far = 2**42
    index.park("j", not_before_ms=far)
    assert index.promote_due() == 0
    assert index.next_parked_due_ms() == far
    assert index.indexed(["j", "other"]) == {"j"}


def test_depth_per_lane(index: WaitingIndex) -> None:
    index.push([IndexEntry("i", "interactive"), IndexEntry("b1", "bulk", "t"),
                IndexEntry("b2", "bulk", "t")])
    assert (index.depth("interactive"), index.depth("bulk"), index.depth()) == (1, 2, 3)
    assert index.head(2) == ["i", "b1"]


def test_a_dispatch_token_tells_the_live_dispatch_from_a_stale_one(index: WaitingIndex) -> None:
    index.push([IndexEntry("j")])
    ids, token = index.take(1)
    assert ids == ["j"]
    assert index.is_current_dispatch("j", token)
    assert not index.is_current_dispatch("j", token - 1)
    assert index.requeue(["j"]) == 1  # given up on: back at its place
    assert index.position("j") == 0
    assert not index.is_current_dispatch("j", token)


def test_the_dispatch_counter_counts_jobs_that_left_the_queue(index: WaitingIndex) -> None:
    index.push([IndexEntry(f"j{k}") for k in range(5)])
    before = index.dispatch_count()
    index.take(2)
    index.take(0)
    index.take(10)
    assert index.dispatch_count() - before == 5
