"""Sparse vs dense sampling of ground-truth features: 4,096 samples × 16,384 features at L0 ≈ 30.

The dense way draws one uniform per (sample, feature) to decide who fires (67 M per
batch) and one more for every magnitude; the sparse way walks geometric gaps and draws
about as many numbers as there are active features. Both return the same dense
(batch, inst, n_features) tensor; `sample_active`, the sparse form, skips building it. Timings on a shared machine are noisy, so the figure
to quote is the ratio, measured in one run:

    python benchmarks/sampling.py [--repeats 5] [--threads 2] [--zipf]
"""

from __future__ import annotations

import argparse
import time

import torch

from toysuper import FeatureDistribution
from toysuper.truth.frequencies import Zipf


def best_time(draw, device: torch.device, batch_size: int, repeats: int) -> float:
    """Fastest of `repeats` calls of draw(batch_size, generator) (after one warm-up), in seconds."""
    generator = torch.Generator(device=device).manual_seed(0)
    draw(batch_size, generator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw(batch_size, generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def compare(batch_size: int = 4096, n_features: int = 16384, l0: float = 30.0, repeats: int = 5, zipf: bool = False,
            device="cpu") -> dict:
    """Best-of-`repeats` seconds for the dense draw, our sampler (dense output) and its sparse form."""
    device = torch.device(device)
    rate = Zipf(1.0, l0) if zipf else l0 / n_features
    timings = {}
    for method in ("dense", "sparse"):
        dist = FeatureDistribution(n_features, rate, sampling=method, device=device)
        timings[method] = best_time(dist.sample, dist.device, batch_size, repeats)
    timings["active"] = best_time(dist.sample_active, dist.device, batch_size, repeats)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--n-features", type=int, default=16384)
    parser.add_argument("--l0", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zipf", action="store_true", help="Zipf(1.0) frequencies instead of equal ones")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timings = compare(args.batch_size, args.n_features, args.l0, args.repeats, args.zipf, args.device)
    zeros = time.perf_counter()
    torch.zeros(args.batch_size, 1, args.n_features, device=args.device)
    zeros = time.perf_counter() - zeros
    print(f"{args.batch_size} x {args.n_features} features, L0 = {args.l0:g} "
          f"({'Zipf 1.0' if args.zipf else 'equal rates'}), {args.threads} thread(s), {args.device}")
    print(f"dense  {timings['dense'] * 1e3:8.1f} ms")
    print(f"sparse {timings['sparse'] * 1e3:8.1f} ms   (of which ~{zeros * 1e3:.1f} ms is zero-filling the dense output)")
    print(f"sparse form (sample_active, no dense output) {timings['active'] * 1e3:.1f} ms")
    print(f"dense / sparse = {timings['dense'] / timings['sparse']:.1f}x; "
          f"dense / sparse form = {timings['dense'] / timings['active']:.1f}x")


if __name__ == "__main__":
    main()
