"""Toy models: one step at 1, 64 and 4,096 instances, and 64 instances in one pass against 64 sequential runs.

The paper's model (Elhage et al. 2022): n = 20 features in m = 5 dimensions, S = 0.9, importance
0.7^i, batch 1024. Step times exclude set-up (train_toy_model over `steps` + 10 steps and over 10,
differenced); on CUDA the step is captured in a CUDA graph (capture="auto").

    python benchmarks/toy_batching.py [--device cuda] [--steps 200] [--instances 1 64 4096]
"""

from __future__ import annotations

import argparse
import time

import torch

from toysuper import FeatureDistribution, ToyModel, train_toy_model


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def train_time(n_instances: int, steps: int, device, seed: int = 0) -> float:
    """Seconds to train `n_instances` toy models for `steps` steps in one pass, set-up included."""
    dist = FeatureDistribution(20, sparsity=0.9, n_instances=n_instances, importance=0.7 ** torch.arange(20),
                               device=device)
    model = ToyModel(20, 5, n_instances=n_instances, seed=seed, device=device)
    synchronize(device)
    start = time.perf_counter()
    train_toy_model(model, dist, steps=steps, batch_size=1024, seed=seed, quiet=True, log_every=10**9)
    synchronize(device)
    return time.perf_counter() - start


def step_time(n_instances: int, steps: int, device) -> float:
    """Seconds per step of `n_instances` toy models, set-up and warm-up excluded."""
    train_time(n_instances, 10, device)  # warm-up
    return max(train_time(n_instances, steps + 10, device) - train_time(n_instances, 10, device), 1e-9) / steps


def compare(instances: int = 64, steps: int = 200, device="cpu") -> dict:
    """64 toy models trained in one batched pass against the same 64 trained one at a time."""
    train_time(1, 10, device)  # warm-up: first-call allocations and kernel selection
    batched = train_time(instances, steps, device)
    sequential = sum(train_time(1, steps, device, seed=i) for i in range(instances))
    return {"instances": instances, "steps": steps, "batched_s": batched, "sequential_s": sequential,
            "speedup": sequential / batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 64, 4096])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for n in args.instances:
        seconds = step_time(n, args.steps, args.device)
        print(f"{n} instances: {1e3 * seconds:.3f} ms/step, {n * args.steps / (seconds * args.steps):,.0f} "
              f"instance-steps/s", flush=True)
    result = compare(64, args.steps, args.device)
    print(f"64 toy models x {result['steps']} steps: batched {result['batched_s']:.2f} s, sequential "
          f"{result['sequential_s']:.2f} s, {result['speedup']:.1f}x")


if __name__ == "__main__":
    main()
