"""How many CPU threads torch uses inside `train_toy_model`, `train_sae` and `evaluate`.

toysuper's tensors are small: cut into pieces for several threads, each piece is too small to pay for
the hand-offs, and on a shared CPU a thread waiting for a busy core stalls every operation (docs/threads.md).
So one thread is the default unless the caller chose a count; the count is restored when the call returns.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager

import torch

_AT_IMPORT = torch.get_num_threads()  # a different count later means the caller set one


@contextmanager
def torch_threads(threads: int | None):
    """torch's CPU thread count for the block, restored after it.

    threads: n >= 1: n; 0: torch's current setting; None: 1, unless the caller chose a count (by
    OMP_NUM_THREADS / MKL_NUM_THREADS, or torch.set_num_threads since toysuper was imported), which is kept.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be None, 0 (torch's setting) or a whole number >= 1, got {threads!r}")
    previous = torch.get_num_threads()
    if threads is None:
        chose = previous != _AT_IMPORT or any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
        threads = previous if chose else 1
    if threads in (0, previous):
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_threads(function):
    """Run `function` under `torch_threads(threads)`, its keyword-only `threads=` argument."""

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        with torch_threads(kwargs.get("threads")):
            return function(*args, **kwargs)

    return wrapped
