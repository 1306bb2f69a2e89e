"""One intra-op thread unless a benchmark says otherwise: the recorded figures must not depend
on how busy the machine's other cores are."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
