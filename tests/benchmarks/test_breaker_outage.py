"""The outage benchmark end to end, at its smallest: one design, one small burst, the real stack
and simulator. Without a breaker every job calls the dead model exactly once, so the printed
count must be the simulator's."""

from __future__ import annotations

import pytest

from benchmarks import breaker_outage
from benchmarks.outage.table import HEADER


def test_one_small_run_prints_its_table_with_the_simulators_count(
        capsys: pytest.CaptureFixture[str]) -> None:
    breaker_outage.main(["--scenarios", "a", "--designs", "off", "--processes", "1",
                         "--burst", "6", "--no-latency"])
    lines = capsys.readouterr().out.splitlines()
    assert "(a) first model dead (100 % 503) from the start, a burst of 6 jobs per process" in lines
    header = lines.index(HEADER.rstrip())
    design, processes, bad_calls, succeeded, p50_s, p95_s = lines[header + 1].split()
    assert (design, processes, bad_calls, succeeded) == ("off", "1", "6", "6/6")
    assert 0 < float(p50_s) <= float(p95_s)
    assert lines[-1].startswith("total wall time ")
