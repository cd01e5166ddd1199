"""Measured comparisons (not timed tests): run `python -m benchmarks.<name>`."""
