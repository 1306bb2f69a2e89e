"""Speed and quality benchmarks (``python -m benchmarks.<name> [--quick]``)."""

import learned_at.runners  # noqa: F401  (before torch: OpenMP's wait policy, runners/threads.py)
