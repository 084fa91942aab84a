"""Benchmarks run on demand (see bench/README.md); each is a runnable module with ``--help``."""
