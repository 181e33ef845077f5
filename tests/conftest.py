import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default=None, help="run the suite on this device (cpu, cuda); "
                                                    "default: $TOYSUPER_TEST_DEVICE or cpu")


def pytest_configure(config):
    # before the test modules are imported: tests/device.py reads it
    if config.getoption("--device"):
        os.environ["TOYSUPER_TEST_DEVICE"] = config.getoption("--device")
    if os.environ.get("TOYSUPER_TEST_DEVICE", "cpu").startswith("cuda"):
        # a capture that fails and falls back to eager fails the test (pytest.warns still catches it)
        config.addinivalue_line("filterwarnings", "error::toysuper.capture.CaptureWarning")


@pytest.fixture(autouse=True)
def _device_and_threads():
    from device import DEVICE

    # Test tensors are small: one thread is as fast, and never stalls when the cores are shared.
    torch.set_num_threads(1)
    if DEVICE == "cpu":
        yield
        return
    torch.set_default_device(DEVICE)  # the tests' own tensors (torch.randn(...) and the like) on the device too
    yield
    torch.set_default_device("cpu")
