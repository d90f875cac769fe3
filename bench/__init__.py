"""Benchmarks of dj-staged.

``make bench`` (:mod:`bench.run`) measures every row of ``bench/plan.py`` in its own
process and writes ``bench/results.md`` and ``bench/results.json``;
:mod:`bench.zarr_memory` is a standalone script (``run(gib) -> dict`` and ``main()``).
"""
