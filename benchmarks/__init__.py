"""Measurements of speed and memory, run by hand: `python -m benchmarks.<name>`."""
