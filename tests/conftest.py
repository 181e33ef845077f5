import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    # CI machines have 2 cores; more threads only add contention.
    torch.set_num_threads(2)
