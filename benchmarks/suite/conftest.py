"""The project is imported before torch, as in a user's process (whatever it sets for OpenMP
then reaches OpenMP); benchmarks run on one intra-op thread unless they say otherwise, so
that the recorded figures do not depend on how busy the machine's other cores are."""

from __future__ import annotations

import learned_at.runners  # noqa: F401  # before torch, as the commands import it

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
