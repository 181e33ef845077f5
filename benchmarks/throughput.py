"""SAE training throughput per recipe, at 1 and 64 instances, eager and captured, against its matmul bound.

The task is the peer task P (1024 features in 128 dimensions, p = 8/1024, width 1024, batch 1024),
n_instances SAEs trained side by side in one step. The matmul bound is the time of the products a
step cannot avoid, run bare as batched matmuls of the same shapes:
    dense recipes (anthropic_2024, relu_l1, jumprelu): five B·d·s products per instance, the encoder
        and decoder forward and, backward, the decoder's weight gradient, the gradient reaching the
        latents and the encoder's weight gradient; gated decodes twice (its frozen-decoder term), seven;
    the TopK family (topk, batchtopk, matryoshka): one, the dense encoder product that chooses the
        latents; everything after the choice costs in proportion to the kept latents (sae/codes.py).
A recipe's "fraction of the matmul bound" is that time over its measured step. "captured" replays the
step from a CUDA graph (capture="auto", CUDA only); "eager" runs it op by op (capture="off").

    python benchmarks/throughput.py [--device cuda] [--instances 1 64] [--steps 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import toysuper as ts
from toysuper.grade.bakeoff import MEAN_ACTIVE, STANDARD

SPARSE_RECIPES = ("topk", "batchtopk", "matryoshka")
MATMULS = {"gated": 7, **{recipe: 1 for recipe in SPARSE_RECIPES}}
"""B·d·s products per instance the step cannot avoid, where not the dense five."""


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def task_p(n_instances: int, device, seed: int = 0) -> ts.DictionarySource:
    """Task P with n_instances independent streams over one set of directions."""
    directions = ts.random_directions(STANDARD.n_features, STANDARD.d_hidden, seed=seed, device=device)[0]
    dist = ts.FeatureDistribution(STANDARD.n_features, MEAN_ACTIVE / STANDARD.n_features, n_instances=n_instances,
                                  device=device)
    return ts.DictionarySource(directions, dist)


def matmul_bound(recipe: str, n_instances: int, device, repeats: int = 20) -> float:
    """Seconds for the products of one step that the recipe cannot avoid (median of `repeats`)."""
    batch, d, s = STANDARD.batch_size, STANDARD.d_hidden, STANDARD.d_sae
    x = torch.randn(n_instances, batch, d, device=device)
    acts = torch.randn(n_instances, batch, s, device=device)
    W_enc, W_dec = torch.randn(n_instances, d, s, device=device), torch.randn(n_instances, s, d, device=device)
    products = [lambda: torch.bmm(x, W_enc), lambda: torch.bmm(acts, W_dec),
                lambda: torch.bmm(acts.transpose(1, 2), x), lambda: torch.bmm(x, W_dec.transpose(1, 2)),
                lambda: torch.bmm(x.transpose(1, 2), acts)]
    count = MATMULS.get(recipe, 5)
    chosen = [products[i % 5] for i in range(count)]
    for product in chosen:
        product()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for product in chosen:
            product()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_time(recipe: str, n_instances: int, steps: int, device, capture: str = "off",
              precision: str = "float32") -> float:
    """Seconds per training step at the recipe's defaults, set-up and warm-up excluded: train_sae over
    `steps` + 10 steps and over 10 steps on the same SAE and data, and the difference divided by `steps`."""
    source = task_p(n_instances, device)
    # BatchTopK and Matryoshka time their batch-wide step (the published one), not their TopK warm-up's
    batch_wide = {"topk_warmup": 0.0} if "topk_warmup" in ts.RECIPES[recipe].hyperparameters else {}
    sae = ts.SAE(STANDARD.d_hidden, STANDARD.d_sae, n_instances, recipe=recipe, seed=0, device=device, **batch_wide)
    options = {"batch_size": STANDARD.batch_size, "quiet": True, "capture": capture, "precision": precision,
               "log_every": 10**9}
    ts.train_sae(sae, source, steps=10, **options)  # warm-up: kernels chosen, caches filled
    timings = []
    for n in (10, steps + 10):
        synchronize(device)
        start = time.perf_counter()
        ts.train_sae(sae, source, steps=n, **options)
        synchronize(device)
        timings.append(time.perf_counter() - start)
    return max(timings[1] - timings[0], 1e-9) / steps


def recipe_throughput(steps: int, device, instances=(1, 64), recipes=None, precision: str = "float32") -> list[dict]:
    """One row per (recipe, instances, mode): SAE-samples/s and the fraction of the matmul bound."""
    modes = ["eager", "captured"] if torch.device(device).type == "cuda" else ["eager"]
    rows = []
    for recipe in recipes or list(ts.RECIPES):
        for n_instances in instances:
            bound = matmul_bound(recipe, n_instances, device)
            for mode in modes:
                seconds = step_time(recipe, n_instances, steps, device, "auto" if mode == "captured" else "off",
                                    precision)
                rows.append({"recipe": recipe, "instances": n_instances, "mode": mode, "step_ms": 1e3 * seconds,
                             "samples_per_s": n_instances * STANDARD.batch_size / seconds,
                             "fraction_of_matmul_bound": bound / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--recipes", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for row in recipe_throughput(args.steps, args.device, args.instances, args.recipes, args.precision):
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
