"""Speed options of the training step: bf16 autocast and torch.compile with a clean fallback."""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("float32", "bfloat16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast(device: torch.device, precision: str):
    """A context in which the forward pass runs in `precision`.

    "bfloat16" autocasts matmuls to bf16 (weights, Adam moments and the loss stay float32):
    about twice the matmul throughput on recent GPUs, and four times on CPUs with AVX512-BF16
    (benchmarks/throughput.py: relu_l1's whole step about twice as fast). The TopK family keeps
    only its latent selection in bf16 and computes the kept latents in float32
    (sparse_codes.py). On a CPU without bf16 units it is slower; it is allowed there only so
    that the same settings run everywhere.
    """
    if check_precision(precision) == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class CompiledOrEager:
    """`torch.compile(function)`, or `function` itself where compiling fails.

    The first call decides: if compiling or running the compiled function raises (no C++
    compiler, an op the compiler does not support), a warning says why and every call from then
    on runs eagerly. Meant for pure functions (a recipe's loss): the eager retry recomputes
    the call from the same inputs.
    """

    def __init__(self, function):
        self.function = function
        self._compiled = torch.compile(function)
        self._chosen = None

    def __call__(self, *args):
        if self._chosen is not None:
            return self._chosen(*args)
        try:
            result = self._compiled(*args)
            self._chosen = self._compiled
            return result
        except Exception as error:  # any failure of the compiler means: run eagerly
            warnings.warn(f"torch.compile failed, training eagerly instead: {type(error).__name__}: {error}",
                          RuntimeWarning, stacklevel=2)
            self._chosen = self.function
            return self.function(*args)
