"""The device the test suite runs on: the CPU by default, a GPU with `pytest --device cuda` (or the
environment variable TOYSUPER_TEST_DEVICE=cuda). Tests pass it as `device=DEVICE` and draw from
`torch.Generator(DEVICE)`; conftest.py makes it torch's default device for the test's own tensors."""

import os

DEVICE = os.environ.get("TOYSUPER_TEST_DEVICE", "cpu")
