"""Benchmark: what recovery-over-training snapshots cost, as a fraction of training (issue 25, item 4).

Trains one recipe on every task of the smoke suite with the suite's snapshots (suite.SNAPSHOTS points on
snapshot_eval held-out samples), at 1 thread, timing the snapshots inside each run: the ratio of their time
to the rest of the same run holds on a busy machine, where two separate runs' times do not. The target:
under 10%.

    python benchmarks/snapshots.py --recipe topk
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's toysuper
from toysuper.sae.model import SAE  # noqa: E402
from toysuper.sae.snapshots import Snapshots  # noqa: E402
from toysuper.sae.train import train_sae  # noqa: E402
from toysuper.validate.run import matched_sparsity  # noqa: E402
from toysuper.sae.recipes import get_recipe  # noqa: E402
from toysuper.validate.suite import SIZES, SNAPSHOTS, TASKS  # noqa: E402


def timed(recipe: str, setup, snapshot_samples: int) -> tuple[float, float]:
    """(seconds of training without the snapshots, seconds of the snapshots), from one run."""
    sae = SAE(setup.source.d_hidden, setup.d_sae, recipe=recipe, seed=0,
              **matched_sparsity(get_recipe(recipe), setup.l0))
    spent = [0.0]
    take = Snapshots.take

    def timed_take(self, *args):
        start = time.perf_counter()
        take(self, *args)
        spent[0] += time.perf_counter() - start

    Snapshots.take = timed_take
    try:
        start = time.perf_counter()
        train_sae(sae, setup.source, steps=setup.samples // setup.batch_size, batch_size=setup.batch_size, seed=1,
                  quiet=True, snapshots=SNAPSHOTS, snapshot_samples=snapshot_samples)
        total = time.perf_counter() - start
    finally:
        Snapshots.take = take
    return total - spent[0], spent[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="topk")
    parser.add_argument("--suite", default="smoke", choices=list(SIZES))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    size = SIZES[args.suite]
    totals = [0.0, 0.0]
    for name, task in TASKS.items():
        setup = task.build(size, "cpu")
        training, snapshots = timed(args.recipe, setup, size.snapshot_eval)
        totals[0] += training
        totals[1] += snapshots
        print(f"{name:14s} training {training:6.1f} s, {SNAPSHOTS} snapshots {snapshots:5.2f} s: "
              f"+{snapshots / training:.1%}", flush=True)
    print(f"all tasks: training {totals[0]:.1f} s, snapshots {totals[1]:.1f} s: +{totals[1] / totals[0]:.1%} "
          f"(target < 10%)")


if __name__ == "__main__":
    main()
