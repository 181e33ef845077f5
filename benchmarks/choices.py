"""The device-specific choices in the step, each timed against the formulation it replaces on this device.

A device-specific path must earn its place (> 20% on its device, DESIGN.md). Each row is a ratio of
two timings taken back to back here (the median over interleaved rounds):
    batch cut   BatchTopK's selection on task P (8,192 of 1,048,576 scores): torch.topk against the
                guessed cut of sae/selection.py, which an eager CPU step uses;
    aux block   AuxK's selection with 8% of 1024 latents dead, k_aux = 64: the topk over every latent
                against the dead latents' block of the CPU path;
    decode      the sparse code's segment sum (sae/sparse.segment_sum: 8,192 weighted rows of 128 summed into
                1,024, what decoding and both backward passes do): index_add against embedding_bag,
                which the CPU uses;
    toy loss    the toy model's loss and gradients (64 instances, n = 20, m = 5, batch 1024): autograd
                against the hand-written backward pass of toy/model.py.

    python benchmarks/choices.py [--device cpu] [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from toysuper import ToyModel
from toysuper.sae import selection
from toysuper.toy.model import importance_weighted_mse


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(first, second, rounds: int, device) -> float:
    """Median over rounds of time(first) / time(second), each round one call of each after a warm-up."""
    for f in (first, second):
        f(), f()
    ratios = []
    for _ in range(rounds):
        times = []
        for f in (first, second):
            synchronize(device)
            start = time.perf_counter()
            f()
            synchronize(device)
            times.append(time.perf_counter() - start)
        ratios.append(times[0] / times[1])
    return statistics.median(ratios)


def compare(device="cpu", rounds: int = 20) -> dict[str, float]:
    """Each choice's speed-up over the formulation it replaces (> 1: the choice is faster)."""
    generator = torch.Generator(device).manual_seed(0)
    pre = torch.randn(1024, 1, 1024, generator=generator, device=device)
    k = torch.tensor([8], device=device)
    dead = torch.rand(1, 1024, generator=generator, device=device) < 0.08
    k_aux = torch.tensor([64], device=device)
    rows = torch.arange(1024, device=device).repeat_interleave(8)
    latents = torch.randint(0, 1024, (8192,), generator=generator, device=device)
    weights = torch.rand(8192, generator=generator, device=device)
    table = torch.randn(1024, 128, generator=generator, device=device)
    starts = torch.searchsorted(rows, torch.arange(1024, device=device))

    def index_add():
        table.new_zeros(1024, 128).index_add_(0, rows, table.index_select(0, latents) * weights[:, None])

    def embedding_bag():
        F.embedding_bag(latents, table, starts, mode="sum", per_sample_weights=weights)

    model = ToyModel(20, 5, 64, seed=0, device=device)
    x = torch.rand(1024, 64, 20, generator=generator, device=device)
    x = x * (torch.rand(1024, 64, 20, generator=generator, device=device) < 0.1)
    importance = torch.ones(64, 20, device=device)

    def hand_written():
        importance_weighted_mse(model, x, importance).sum().backward()

    def autograd():
        (importance * (x - model(x)).pow(2)).sum(-1).mean(0).sum().backward()

    return {
        "batch cut: topk / guessed cut": interleaved(lambda: selection.batch_top_k(pre, k, 8, fixed_shapes=True),
                                                     lambda: selection.batch_top_k(pre, k, 8, fixed_shapes=False),
                                                     rounds, device),
        "aux block: topk over all latents / dead block": interleaved(
            lambda: selection.aux_k(pre, dead, k_aux, 64),
            lambda: selection.dead_block(pre, dead, k_aux), rounds, device),
        "decode: index_add / embedding_bag": interleaved(index_add, embedding_bag, rounds,
                                                                              device),
        "toy loss: autograd / hand-written backward": interleaved(autograd, hand_written, rounds, device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for name, ratio in compare(args.device, args.rounds).items():
        print(f"{name:60s} {ratio:6.2f}x")


if __name__ == "__main__":
    main()
