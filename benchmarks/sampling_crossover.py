"""Where walking the hits stops paying: the costs behind FeatureDistribution's "auto" sampling.

A dense draw costs one uniform per (sample, instance, feature); a walk costs a fixed amount
plus a price per hit, lower when every column fires at the same rate (one run of gaps) than
when each column has its own (toysuper/sparse_sampling.py). This script times both ways at
a few firing rates, takes cost = fixed cost + price · hits for each kind of walk, and prints
the constants in units of one dense uniform, to set against
toysuper.sparse_sampling.HIT_COST_ONE_RATE, HIT_COST and WALK_OVERHEAD:

    python benchmarks/sampling_crossover.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from toysuper import FeatureDistribution
from toysuper import sparse_sampling

def median_time(dist: FeatureDistribution, batch_size: int, repeats: int) -> float:
    """Median seconds of dist.sample(batch_size), after three warm-up draws."""
    generator = torch.Generator(device=dist.device).manual_seed(0)
    for _ in range(3):
        dist.sample(batch_size, generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dist.sample(batch_size, generator)
        if dist.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(repeats: int = 30, device: str = "cpu") -> dict:
    """The fitted costs, in dense uniforms: per hit of a one-rate walk and of a per-column walk
    (slopes between two rates on a 1024 × 1024 grid), and a walk's fixed cost beyond a dense
    draw's (from a small 1024 × 20 grid, where the fixed costs dominate)."""
    batch_size = 1024

    def one_rate(n_features, rate, sampling):
        return FeatureDistribution(n_features, rate, sampling=sampling, device=device)

    def per_column(n_features, rate, sampling):  # rates spread over [0.5, 1.5] × rate, same mean
        return FeatureDistribution(n_features, rate * torch.linspace(0.5, 1.5, n_features), sampling=sampling,
                                   device=device)

    def per_hit(make, low, high):
        """Seconds per extra hit of a walk between firing rates low and high."""
        dists = [make(1024, rate, "sparse") for rate in (low, high)]
        seconds = [median_time(dist, batch_size, repeats) for dist in dists]
        hits = [batch_size * float(dist.firing_prob.sum()) for dist in dists]
        return (seconds[1] - seconds[0]) / (hits[1] - hits[0])

    dense = median_time(one_rate(1024, 0.1, "dense"), batch_size, repeats) / (batch_size * 1024)
    hit_one, hit_many = per_hit(one_rate, 0.03, 0.15), per_hit(per_column, 0.02, 0.1)
    small = {sampling: one_rate(20, 0.05, sampling) for sampling in ("sparse", "dense")}
    small_s = {sampling: median_time(dist, batch_size, repeats) for sampling, dist in small.items()}
    fixed = small_s["sparse"] - batch_size * 20 * 0.05 * hit_one - (small_s["dense"] - batch_size * 20 * dense)
    return {"dense_ns_per_entry": 1e9 * dense, "hit_cost_one_rate": hit_one / dense, "hit_cost": hit_many / dense,
            "walk_overhead": fixed / dense}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    costs = measure(args.repeats, args.device)
    print(f"dense draw: {costs['dense_ns_per_entry']:.2f} ns per entry ({args.threads} thread(s), {args.device})")
    print("in dense uniforms:   measured   toysuper.sparse_sampling")
    for key, constant in (("hit_cost_one_rate", "HIT_COST_ONE_RATE"), ("hit_cost", "HIT_COST"),
                          ("walk_overhead", "WALK_OVERHEAD")):
        print(f"  {key:18s} {costs[key]:10.1f}   {constant} = {getattr(sparse_sampling, constant):g}")
    for key, label in (("hit_cost_one_rate", "one rate"), ("hit_cost", "per-column rates")):
        print(f"crossover at 1024 x 1024, {label}: dense above {1 / costs[key]:.1%} firing")


if __name__ == "__main__":
    main()
