"""The README's API snippet (toy model, then an SAE on it) at 200 steps: torch's default thread count
(threads=0) against one thread (the API's default), interleaved in one process; seconds per round.

    python benchmarks/threads.py [--rounds 3] [--steps 200]

Run it without OMP_NUM_THREADS, so that torch starts with its own default. Figures: docs/threads.md.
"""

import argparse
import time

import torch

import toysuper as ts


def snippet(threads: int, steps: int) -> tuple[float, float]:
    """Seconds to train the README's toy models, then its SAEs, at `threads` (0: torch's setting)."""
    dist = ts.FeatureDistribution.sparsity_sweep(20, [0.0, 0.9, 0.99], importance=0.7 ** torch.arange(20), device="cpu")
    model = ts.ToyModel(n_features=20, d_hidden=5, n_instances=3, kind="relu_output", device="cpu")
    start = time.perf_counter()
    ts.train_toy_model(model, dist, steps=steps, quiet=True, threads=threads)
    toy = time.perf_counter() - start
    sae = ts.SAE(d_hidden=5, d_sae=40, n_instances=3, recipe="anthropic_2024", l1_coefficient=0.3, device="cpu")
    start = time.perf_counter()
    ts.train_sae(sae, ts.ToyModelSource(model, dist), steps=steps, batch_size=1024, lr=1e-3, quiet=True,
                 threads=threads)
    return toy, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    times = {0: [], 1: []}
    for _ in range(args.rounds):
        for threads in times:
            times[threads].append(snippet(threads, args.steps))
    print(f"torch's default: {torch.get_num_threads()} threads; {args.steps} steps; seconds per round")
    for threads, rounds in times.items():
        label = "torch's default" if threads == 0 else "one thread"
        print(f"{label:>16}: toy model {' '.join(f'{t:.2f}' for t, _ in rounds)} | "
              f"SAE {' '.join(f'{s:.2f}' for _, s in rounds)}")


if __name__ == "__main__":
    main()
