"""The simulated cloud on loopback, for `goalkeeper demo`, the tests and the benchmarks.

A tool beside the product, not part of it: the `sim` extra and the dev install bring it, the
image does not, and nothing in `goalkeeper` imports it (an import-linter contract).
"""
