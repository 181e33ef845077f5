"""Toy models: 64 instances in one batched pass against 64 sequential single-instance runs.

Both train the same total work (64 models × STEPS steps of batch 1024, n = 20, m = 5);
the batched pass does it as one tensor program. The figure is the ratio, from one run:

    python benchmarks/toy_batching.py [--steps 300] [--instances 64]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from toysuper import FeatureDistribution, ToyModel, train_toy_model


def page_faults() -> int:
    """Minor page faults of this process so far (fresh pages the kernel had to hand over)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def train_time(n_instances: int, steps: int, device: str, seed: int = 0) -> float:
    """Seconds to train `n_instances` toy models (n = 20, m = 5, S = 0.9) in one pass."""
    dist = FeatureDistribution(20, sparsity=0.9, n_instances=n_instances, importance=0.7 ** torch.arange(20),
                               device=device)
    model = ToyModel(20, 5, n_instances=n_instances, seed=seed, device=device)
    start = time.perf_counter()
    train_toy_model(model, dist, steps=steps, batch_size=1024, seed=seed, quiet=True)
    if model.W.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def sampling_time(n_instances: int, device: str, repeats: int = 50) -> float:
    """Seconds to draw one training batch of features for `n_instances` models (median of `repeats`)."""
    dist = FeatureDistribution(20, sparsity=0.9, n_instances=n_instances, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        dist.sample(1024, generator)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[repeats // 2]


def compare(instances: int = 64, steps: int = 300, device: str = "cpu") -> dict:
    """Batched and sequential wall times and their ratio, the ratio's ceiling set by drawing the
    batched pass's features alone (the batched step cannot take less than that), and the page
    faults per batched step (toysuper/allocator.py keeps them near 0)."""
    train_time(1, 10, device)  # warm-up: first-call allocations and kernel selection
    faults = page_faults()
    batched = train_time(instances, steps, device)
    faults = (page_faults() - faults) / steps
    sequential = sum(train_time(1, steps, device, seed=i) for i in range(instances))
    draw = sampling_time(instances, device)
    return {"instances": instances, "steps": steps, "batched_s": batched, "sequential_s": sequential,
            "speedup": sequential / batched, "draw_ms": 1e3 * draw, "ceiling": sequential / (steps * draw),
            "batched_page_faults": faults}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = compare(args.instances, args.steps, args.device)
    print(f"{result['instances']} toy models x {result['steps']} steps: batched {result['batched_s']:.2f} s, "
          f"sequential {result['sequential_s']:.2f} s, speed-up {result['speedup']:.1f}x; drawing one batched "
          f"batch takes {result['draw_ms']:.2f} ms, which caps the speed-up at {result['ceiling']:.1f}x; "
          f"{result['batched_page_faults']:.0f} page faults per batched step")


if __name__ == "__main__":
    main()
