"""Where walking the hits stops paying: the costs behind FeatureDistribution's "auto" sampling.

A dense draw costs one uniform per (sample, instance, feature); a walk costs a fixed amount
plus a price per hit, lower when every column fires at the same rate (one run of gaps) than
when each column has its own (toysuper/sparse_sampling.py). This script times both ways,
taking cost = fixed cost + price · hits for each kind of walk, and prints the constants in
units of one dense uniform, to set against
toysuper.truth.sparse_sampling.HIT_COST_ONE_RATE, HIT_COST and WALK_OVERHEAD:

    python benchmarks/sampling_crossover.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toysuper import FeatureDistribution
from toysuper import sparse_sampling


def median_times(dists: dict, batch_size: int, repeats: int) -> dict:
    """Median seconds of dist.sample(batch_size) for each entry, the draws taken in turn so that
    a drift of the machine's speed touches all alike (after three warm-up draws each)."""
    generators = {name: torch.Generator(device=dist.device).manual_seed(0) for name, dist in dists.items()}
    times = {name: [] for name in dists}
    for rep in range(repeats + 3):
        for name, dist in dists.items():
            start = time.perf_counter()
            dist.sample(batch_size, generators[name])
            if dist.device.type == "cuda":
                torch.cuda.synchronize()
            if rep >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(repeats: int = 30, device: str = "cpu") -> dict:
    """The costs in dense uniforms (a 1024 × 1024 dense draw's time per entry): per hit, on average,
    of a one-rate walk (10% firing) and of a per-column walk (5% on average) on that grid; and a
    walk's fixed cost beyond a dense draw's, from a small 1024 × 20 grid where fixed costs
    dominate. Sparse draws include building the dense output, as `sample` does."""
    batch_size = 1024

    def dists(n_features, rate):
        return {sampling: FeatureDistribution(n_features, rate, sampling=sampling, device=device)
                for sampling in ("sparse", "dense")}

    costs, entries = {}, batch_size * 1024
    for key, rate in (("hit_cost_one_rate", torch.tensor(0.1)), ("hit_cost", 0.05 * torch.linspace(0.5, 1.5, 1024))):
        timed = median_times(dists(1024, rate), batch_size, repeats)
        per_entry = timed["dense"] / entries
        # the walk's fixed cost is a small part of its time at these sizes (< 0.5 dense uniforms a hit)
        costs[key] = timed["sparse"] / per_entry / (batch_size * float(rate.expand(1024).sum()))
        costs["dense_ns_per_entry"] = 1e9 * per_entry
    # fixed costs: the small grid's sparse - dense time, less its hits' price, plus its entries' price
    small = median_times(dists(20, 0.05), batch_size, repeats)
    small_entries = batch_size * 20
    costs["walk_overhead"] = (small["sparse"] - small["dense"]) / (1e-9 * costs["dense_ns_per_entry"]) \
        - 0.05 * small_entries * costs["hit_cost_one_rate"] + small_entries
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    costs = measure(args.repeats, args.device)
    print(f"dense draw: {costs['dense_ns_per_entry']:.2f} ns per entry ({args.threads} thread(s), {args.device})")
    print("in dense uniforms:   measured   toysuper.truth.sparse_sampling")
    for key, constant in (("hit_cost_one_rate", "HIT_COST_ONE_RATE"), ("hit_cost", "HIT_COST"),
                          ("walk_overhead", "WALK_OVERHEAD")):
        print(f"  {key:18s} {costs[key]:10.1f}   {constant} = {getattr(sparse_sampling, constant):g}")
    for key, label in (("hit_cost_one_rate", "one rate"), ("hit_cost", "per-column rates")):
        print(f"crossover at 1024 x 1024, {label}: dense above {1 / costs[key]:.1%} firing")


if __name__ == "__main__":
    main()
