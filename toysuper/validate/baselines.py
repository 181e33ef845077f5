"""Regenerate the shipped baselines: every built-in on every task of a suite size, into package data.

    python -m toysuper.validate.baselines --suite smoke        # writes toysuper/validate/baselines/smoke.csv

Resumable: the rows train into a work folder (--work, default baselines-SUITE) one file each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ..sweep.store import atomic_write
from .api import BUILT_INS
from .run import row_key, run_row
from .suite import SIZES, TASKS


def regenerate(suite: str, work=None, device="cpu", recipes=BUILT_INS, at: str = "matched") -> Path:
    work = Path(work or f"baselines-{suite}")
    rows, snapshots = [], []
    for recipe in recipes:
        for task in TASKS:
            print(f"{suite}: {recipe} on {task}", flush=True)
            row, snaps = run_row(work, row_key(task, recipe, {}, suite, at, device), device)
            rows.append(row)
            snapshots.append(snaps)
    target = Path(__file__).parent / "baselines"
    target.mkdir(exist_ok=True)
    atomic_write(target / f"{suite}.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write(target / f"{suite}_snapshots.csv", pd.concat(snapshots, ignore_index=True).to_csv(index=False))
    return target / f"{suite}.csv"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=list(SIZES), default="smoke")
    parser.add_argument("--work", help="resumable work folder (default baselines-SUITE)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipes", nargs="+", default=list(BUILT_INS))
    args = parser.parse_args(argv)
    print(f"wrote {regenerate(args.suite, args.work, args.device, args.recipes)}")


if __name__ == "__main__":
    main()
