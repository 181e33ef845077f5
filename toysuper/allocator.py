"""Keeping freed memory in the process, so that a CPU training step does not page-fault on every tensor.

By default glibc's malloc serves large blocks by mmap and hands the free top of its heap back
to the kernel once it passes a threshold (twice the largest block freed so far). A training
step that makes and drops several tensors of a few MB each (64 toy models: 5 MB per
(instance, batch, feature) tensor) then gets fresh pages from the kernel every step, and
touching them costs more than the arithmetic: 1,300–1,900 page faults a step for 64 batched
toy models. With the thresholds below there are a few dozen at most, and the step takes
10–25% less time (benchmarks/toy_batching.py reports the faults per batched step).

`keep_freed_memory` raises both thresholds for the whole process, once; the training loops
call it when they run on the CPU. The price is that up to TRIM_THRESHOLD of freed memory
stays with the process instead of going back to the system.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
MMAP_THRESHOLD = 32 << 20  # blocks up to 32 MB come from the heap (glibc's largest allowed value)
TRIM_THRESHOLD = 256 << 20  # free memory the heap keeps at its top before returning any

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse (see the module docstring); True if it took effect.

    Only Linux with glibc has these settings; elsewhere this does nothing and returns False.
    """
    global _applied
    if _applied is None:
        _applied = _set_glibc_thresholds()
    return _applied


def _set_glibc_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; musl's stub returns 0
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
