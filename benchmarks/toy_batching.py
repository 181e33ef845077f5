"""Toy models: 64 instances in one batched pass against 64 sequential single-instance runs.

Both train the same total work (64 models × STEPS steps of batch 1024, n = 20, m = 5);
the batched pass does it as one tensor program. The figure is the ratio, from one run:

    python benchmarks/toy_batching.py [--steps 300] [--instances 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from toysuper import FeatureDistribution, ToyModel, train_toy_model


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


def compare(instances: int = 64, steps: int = 300, device: str = "cpu") -> dict:
    """Batched and sequential wall times and their ratio."""
    train_time(1, 10, device)  # warm-up: first-call allocations and kernel selection
    batched = train_time(instances, steps, device)
    sequential = sum(train_time(1, steps, device, seed=i) for i in range(instances))
    return {"instances": instances, "steps": steps, "batched_s": batched, "sequential_s": sequential,
            "speedup": sequential / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    result = compare(args.instances, args.steps, args.device)
    print(f"{result['instances']} toy models x {result['steps']} steps: batched {result['batched_s']:.2f} s, "
          f"sequential {result['sequential_s']:.2f} s, speed-up {result['speedup']:.1f}x")


if __name__ == "__main__":
    main()
