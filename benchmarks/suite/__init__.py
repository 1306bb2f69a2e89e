"""The speed figures recorded per commit by ``python -m benchmarks.history`` (pytest-benchmark).

Files are ``bench_*.py`` so that the test suite never collects them; each figure is one
benchmark (its timing statistics) plus, in ``extra_info``, the ratios measured inside it with
interleaved repetitions (robust to the machine's load): the figures the comparison reads.
"""
