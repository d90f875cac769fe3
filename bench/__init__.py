"""Benchmarks of dj-staged: standalone scripts, each with a ``run(...) -> dict`` and a ``main()``."""
