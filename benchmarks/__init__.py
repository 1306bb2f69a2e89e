"""Speed and quality benchmarks (``python -m benchmarks.<name> [--quick]``)."""
