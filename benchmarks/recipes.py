"""Benchmark: every SAE recipe on the standard recovery task.

The task (toysuper/grade/bakeoff.py): a DictionarySource of 1024 random unit directions in 128
dimensions, each feature firing with probability 8/1024 and magnitude U[0, 1]; an SAE of width
1024 trained on 2 million samples (batch 1024) with the recipe's documented defaults, graded on
20,000 held-out samples. Prints a table and writes it as CSV and Markdown.

    python benchmarks/recipes.py                       # every recipe at its defaults (the README table)
    python benchmarks/recipes.py --recipes topk gated  # some recipes
    python benchmarks/recipes.py --quick               # 256 features in 64 dims, 300k samples
    python benchmarks/recipes.py --sweep               # also the sparsity knob ×0.5 and ×2
    python benchmarks/recipes.py --recipes topk --grid k=6,8,12   # explicit instances

Every instance of one recipe trains in one batched pass; recipes are independent of each
other. This is a benchmark, not a test: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

import toysuper as ts
from toysuper.grade.bakeoff import COLUMNS, STANDARD, TaskSize, run_recipe, sweep

QUICK = TaskSize(n_features=256, d_hidden=64, d_sae=256, samples=300_000)


def grid_instances(recipe: str, grid: dict[str, list[float]]) -> list[dict[str, float]]:
    """The defaults with every combination of the grid's values."""
    rows = [dict(ts.RECIPES[recipe].hyperparameters)]
    for name, values in grid.items():
        if name not in rows[0]:
            raise SystemExit(f"recipe {recipe} has no hyperparameter {name!r}; it takes {sorted(rows[0])}")
        rows = [{**row, name: value} for row in rows for value in values]
    return rows


def markdown(table: pd.DataFrame) -> str:
    """The table as GitHub Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in table.to_dict("records"):
        cells = [row["recipe"], row["hyperparameters"]] + [f"{row[c]:.3f}" for c in COLUMNS[2:-1]]
        lines.append("| " + " | ".join(cells + [f"{row['wall_s']:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=list(ts.RECIPES), choices=list(ts.RECIPES))
    parser.add_argument("--quick", action="store_true", help="256 features in 64 dims, width 256, 300k samples")
    parser.add_argument("--sweep", action="store_true", help="also train each recipe's sparsity knob ×0.5 and ×2")
    parser.add_argument("--grid", nargs="*", default=[], metavar="NAME=V1,V2",
                        help="instances over these hyperparameter values (meant for one recipe)")
    parser.add_argument("--samples", type=int, default=None, help=f"training samples (default {STANDARD.samples:,})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default {STANDARD.batch_size}")
    parser.add_argument("--lr", type=float, default=None, help="override the recipes' learning rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="benchmarks/results/recipes", help="writes OUT.csv and OUT.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    size = QUICK if args.quick else STANDARD
    if args.samples is not None:
        size = replace(size, samples=args.samples)
    if args.batch_size is not None:
        size = replace(size, batch_size=args.batch_size)
    grid = {}
    for item in args.grid:
        name, _, values = item.partition("=")
        grid[name] = [float(v) for v in values.split(",")]
    settings = {} if args.lr is None else {"lr": args.lr}
    tables = []
    total = time.perf_counter()
    for recipe in args.recipes:
        instances = grid_instances(recipe, grid) if grid else sweep(recipe, (1.0, 0.5, 2.0) if args.sweep else (1.0,))
        table = run_recipe(recipe, instances, size, seed=args.seed, device=args.device, **settings)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"), flush=True)
        tables.append(table)
    results = pd.concat(tables, ignore_index=True)
    elapsed = time.perf_counter() - total
    print(f"\n{markdown(results)}\nTotal wall time {elapsed:.0f} s ({torch.get_num_threads()} threads; {size})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(markdown(results) + f"\nTotal wall time {elapsed:.0f} s "
                                      f"({torch.get_num_threads()} threads; {size}).\n")
    return results


if __name__ == "__main__":
    main()
