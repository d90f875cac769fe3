"""Benchmarks of dj-staged: ``make bench`` (:mod:`bench.run`), :mod:`bench.overhead`, :mod:`bench.zarr_memory`."""
