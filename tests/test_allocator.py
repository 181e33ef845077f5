"""keep_freed_memory: a step's few-MB tensors reuse the process's memory instead of faulting in fresh pages."""

import subprocess
import sys

import pytest

# Four 8 MB tensors made and dropped ten times, in a fresh process. By default glibc trims the
# heap's free top back to the kernel, so every round faults in its 8,000 pages again.
ROUNDS = """
import resource, sys, torch
from toysuper.allocator import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
for _ in range(3):  # warm-up: the heap grows to its working size
    tensors = [torch.ones(2 << 20) for _ in range(4)]
    del tensors
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    tensors = [torch.ones(2 << 20) for _ in range(4)]
    del tensors
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _faults_per_round(mode: str) -> tuple[bool, float]:
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings exist on Linux only")
def test_keep_freed_memory_stops_page_faults_on_reused_tensors():
    applied, kept = _faults_per_round("keep")
    _, default = _faults_per_round("default")
    assert applied
    pages = 4 * (8 << 20) // 4096
    assert kept < 0.02 * pages, (kept, default)  # the tensors land in memory the process already has
