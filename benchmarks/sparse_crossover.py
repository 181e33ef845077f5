"""Where sparse arithmetic stops paying for the TopK code: step time, sparse vs dense, against k.

A TopK SAE on the standard task (128 dims, 1024 latents, batch 1024) is trained for a few
steps at each k, once with the code computed from its entries (toysuper/sae/sparse_codes.py)
and once densely; toysuper.sae.sparse_codes.SPARSE_BELOW should sit where the two cross.

    python benchmarks/sparse_crossover.py [--threads 2] [--steps 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402
from toysuper.sae import sparse_codes  # noqa: E402

KS = (8, 16, 32, 64, 128, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    default = sparse_codes.SPARSE_BELOW
    print(f"k      sparse ms  dense ms   (SPARSE_BELOW = {default}: sparse while k <= {1024 // default})")
    for k in KS:
        times = {}
        for name, setting in (("sparse", 1), ("dense", 10**9)):
            sparse_codes.SPARSE_BELOW = setting
            times[name] = throughput.step_time("topk", args.steps, hyperparameters={"k": k}) * 1e3
        print(f"{k:<6} {times['sparse']:9.2f} {times['dense']:9.2f}")
    sparse_codes.SPARSE_BELOW = default


if __name__ == "__main__":
    main()
