"""Speed and quality benchmarks (``python -m benchmarks.<name> [--quick]``)."""

import runners  # noqa: F401  (before any benchmark loads torch: OpenMP's wait policy, runners/threads.py)
