"""Benchmarks: scripts that measure the system on real processes (or in simulation) and print
their figures; each runs as ``python -m benchmarks.NAME`` from the repository root
(docs/benchmarks.md has the method and the figures)."""
