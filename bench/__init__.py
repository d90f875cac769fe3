"""Benchmarks of dj-staged: ``make bench`` (:mod:`bench.run`)."""
