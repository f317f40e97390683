"""Measurements of speed and memory: `python -m benchmarks` (make bench), or one at a time with
`python -m benchmarks.<name>`. See docs/performance.md for what they measure and the results."""
