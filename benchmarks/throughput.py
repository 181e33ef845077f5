"""SAE training throughput per recipe, against the matmul throughput of the same shapes.

The task is the standard recovery task (1024 features in 128 dimensions, width 1024, batch
1024). A dense SAE step needs five matmuls of B·d·s multiply-adds each: the encoder and the
decoder forward, and in backward the decoder's weight gradient, the gradient reaching the
latents, and the encoder's weight gradient (b_dec's gradient through the encoder is a
vector-matrix product, see SAE.centred_projection). `matmul_bound` times exactly those five
products as bare torch.mm calls; a recipe's "fraction of matmul bound" is that time over its
measured step time. `gated` decodes twice (its auxiliary loss reconstructs through a frozen
decoder: a forward product and the gradient reaching the gate), so its bound is seven products.
The TopK family decodes sparsely, so its fraction can exceed 1. Each recipe is also timed with
`precision="bfloat16"` (bf16 autocast), which pays on CPUs with AVX512-BF16 as well as on GPUs,
and the recipes named in `compiled` with `compile=True` (the loss through torch.compile, which
fuses the elementwise passes between the matmuls; on this CPU it pays for some recipes and not
for others, so the table shows both).

    python benchmarks/throughput.py [--steps 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import toysuper as ts
from toysuper.sae.bakeoff import STANDARD, task_source


def _synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def matmul_bound(batch: int, d_hidden: int, d_sae: int, device="cpu", repeats: int = 50) -> float:
    """Seconds for the five matmuls of one dense SAE step: the median of `repeats` after a warm-up
    (robust to a moment's interference from elsewhere on a shared machine)."""
    x, g_x = torch.randn(batch, d_hidden, device=device), torch.randn(batch, d_hidden, device=device)
    acts, g_acts = torch.randn(batch, d_sae, device=device), torch.randn(batch, d_sae, device=device)
    W_enc, W_dec = torch.randn(d_hidden, d_sae, device=device), torch.randn(d_sae, d_hidden, device=device)

    def step():
        x @ W_enc            # encoder forward
        acts @ W_dec         # decoder forward
        acts.T @ g_x         # decoder weight gradient
        g_x @ W_dec.T        # gradient reaching the latents
        x.T @ g_acts         # encoder weight gradient

    step()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_time(recipe: str, steps: int, device="cpu", hyperparameters: dict | None = None,
              precision: str = "float32", compile: bool = False) -> float:
    """Seconds per training step of `recipe` at its defaults, init and warm-up excluded.

    Times train_sae over `steps` + 5 and over 5 steps on the same SAE and data, and divides
    the difference: what is left is the steady state of the loop. The warm-up trains twice,
    with different step counts, so that a compiled loss has been compiled for any step count
    (the first call specialises on the numbers it sees) before the clock starts.
    """
    source = task_source(STANDARD, device=device)
    sae = ts.SAE(STANDARD.d_hidden, STANDARD.d_sae, recipe=recipe, seed=0, device=device, **(hyperparameters or {}))
    options = {"batch_size": STANDARD.batch_size, "quiet": True, "precision": precision, "compile": compile}
    for n in (5, 6):  # warm-up
        ts.train_sae(sae, source, steps=n, **options)
    timings = []
    for n in (5, steps + 5):
        _synchronize(device)
        start = time.perf_counter()
        ts.train_sae(sae, source, steps=n, log_every=10**9, **options)
        _synchronize(device)
        timings.append(time.perf_counter() - start)
    return max(timings[1] - timings[0], 1e-9) / steps


MATMULS = {"gated": 7}
"""B·d·s products in a dense step, where not the usual five."""


def recipe_throughput(steps: int = 100, device="cpu", recipes=None, rounds: int = 3,
                      compiled=()) -> list[dict]:
    """One row per recipe: samples/s and the fraction of the matmul bound, all measured in this call,
    in float32, with bf16 autocast, and for the recipes in `compiled` also with torch.compile.

    Each round times the bare matmuls and then the recipe's steps, back to back; the row reports
    the medians over `rounds`, so that a moment's interference on a shared machine does not
    decide the figure.
    """
    rows = []
    for recipe in recipes or list(ts.RECIPES):
        modes = {"eager": {}, "bf16": {"precision": "bfloat16"}}
        if recipe in compiled:
            modes["compiled"] = {"compile": True}
        seconds = {mode: [] for mode in modes}
        fractions = {mode: [] for mode in modes}
        for _ in range(rounds):
            bound = matmul_bound(STANDARD.batch_size, STANDARD.d_hidden, STANDARD.d_sae, device)
            bound *= MATMULS.get(recipe, 5) / 5
            for mode, options in modes.items():
                seconds[mode].append(step_time(recipe, steps, device, **options))
                fractions[mode].append(bound / seconds[mode][-1])
        row = {"recipe": recipe, "step_ms": statistics.median(seconds["eager"]) * 1e3}
        for mode in modes:
            prefix = "" if mode == "eager" else f"{mode}_"
            row[f"{prefix}samples_per_s"] = STANDARD.batch_size / statistics.median(seconds[mode])
            row[f"{prefix}fraction_of_matmul_bound"] = statistics.median(fractions[mode])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compiled", nargs="*", default=[], metavar="RECIPE",
                        help="recipes also timed with compile=True")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for row in recipe_throughput(args.steps, args.device, compiled=args.compiled):
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
