"""Stable ordering of small non-negative integer keys, fast on CPU.

Sparse codes and sparse batches sort a few thousand entries by row or column every training
step. torch.argsort on CPU spends about 0.25 ms on 8,192 keys whatever their range, most of
a sparse step's budget; numpy's stable sort of 16-bit keys is a radix sort and takes 0.02 ms.
Keys up to 2³² are ordered by two such passes, low half then high half (least significant
digit first, which is correct because each pass is stable). Other devices use torch.
"""

from __future__ import annotations

import numpy as np
import torch

RADIX = 1 << 16


def stable_argsort(keys: torch.Tensor, bound: int) -> torch.Tensor:
    """The permutation that sorts `keys` ascending, equal keys keeping their order, (n,) long.

    keys: (n,) integers in [0, bound). Equals `keys.argsort(stable=True)`.
    """
    if keys.device.type != "cpu" or bound > RADIX * RADIX or keys.ndim != 1:
        return keys.argsort(stable=True)
    values = keys.numpy()
    order = np.argsort((values % RADIX).astype(np.uint16), kind="stable")
    if bound > RADIX:
        order = order[np.argsort((values[order] // RADIX).astype(np.uint16), kind="stable")]
    return torch.from_numpy(order.astype(np.int64, copy=False))
