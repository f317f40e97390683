"""A simulated cloud on loopback for demo, tests and benchmarks; the daemon never imports it."""
