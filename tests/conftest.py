import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are small: one thread is as fast, and never stalls when the cores are shared.
    torch.set_num_threads(1)
