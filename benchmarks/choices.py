"""The device-specific choices in the training step, each timed end to end against the formulation it replaces.

A device-specific path must earn its place (> 20% on its device, DESIGN.md). Every figure is a training
step on task P (1,024 features in 128 dims, width 1,024, k = 8, batch 1,024, 8% of the latents dead so
that AuxK works), built as train_sae builds it; variants run interleaved, one step each in turn, and
each is reported as the median of its samples/s over the rounds:
    codes        the sparse codes of sae/codes.py against the dense ones (topk + scatter + matmul), for
                 topk and batchtopk: sae/codes.BY_DEVICE takes sparse on this device only if it wins > 20%;
    AuxK         on the sparse step, AuxK over the dead latents' columns only (their count read back)
                 against the dense top-k over every latent;
    batch cut    on the sparse step, BatchTopK's cut guessed on a subsample (codes.guessed_batch_top_k)
                 against torch.topk over the whole batch;
    plain        a plain dense TopK + AuxK step in torch (SAELens's formulation), for reference.
The toy model's loss lost its hand-written backward pass when autograd came within 1.05× of it
(docs/performance.md); it is plain autograd now, with no choice left to time.

    python benchmarks/choices.py [--device cpu] [--rounds 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

import toysuper as ts
from toysuper.sae import codes
from toysuper.sae.state import TrainState
from toysuper.sae.step import sae_step

P = {"n_features": 1024, "d_hidden": 128, "d_sae": 1024, "k": 8, "batch": 1024}


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def rates(variants: dict, rounds: int, device, samples: int = 1) -> dict[str, float]:
    """Median over rounds of each variant's calls per second (times `samples`), one call each per round."""
    for f in variants.values():
        f(), f()
    seen = {name: [] for name in variants}
    for _ in range(rounds):
        for name, f in variants.items():
            synchronize(device)
            start = time.perf_counter()
            f()
            synchronize(device)
            seen[name].append(samples / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in seen.items()}


@contextlib.contextmanager
def setting(obj, name, value):
    """obj.name = value while inside (obj a module, class or dict)."""
    get, put = (obj.get, obj.__setitem__) if isinstance(obj, dict) else (
        lambda n: getattr(obj, n), lambda n, v: setattr(obj, n, v))
    old = get(name)
    put(name, value)
    try:
        yield
    finally:
        put(name, old) if old is not None else obj.pop(name)


def task_p_source(device):
    directions = ts.random_directions(P["n_features"], P["d_hidden"], seed=0, device=device)[0]
    return ts.DictionarySource(directions, ts.FeatureDistribution(P["n_features"], P["k"] / P["n_features"],
                                                                  device=device))


def training_step(recipe: str, device, implementation=None, changes=()):
    """One task-P training step of `recipe` as train_sae runs it, with codes.BY_DEVICE set to `implementation`
    (None: the default here) and the other module settings in `changes`, (object, name, value) each."""
    source = task_p_source(device)
    warmup = {"topk_warmup": 0.0} if recipe == "batchtopk" else {}
    sae = ts.SAE(P["d_hidden"], P["d_sae"], recipe=recipe, k=P["k"], seed=0, device=device, **warmup)
    generator = [torch.Generator(device).manual_seed(0)]
    lr = torch.tensor(3e-3, device=device)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr, fused=torch.device(device).type in ("cpu", "cuda"))
    state = TrainState(steps=10**6, batch_size=P["batch"], dead_window=10**9, optimizer=optimizer, phase=2,
                       draw=lambda n: source.sample_hidden(n, generator), step=torch.zeros((), device=device),
                       samples_since_fired=torch.zeros(1, P["d_sae"], device=device))
    step = sae_step(sae, state, optimizer, lr, 3e-3, {"warmup": 0.0, "decay": 0.2}, None, "float32")
    device_type = torch.device(device).type
    changes = [*changes, (codes.BY_DEVICE, device_type, implementation or codes.BY_DEVICE.get(device_type))]

    def run():
        state.samples_since_fired.zero_()
        state.samples_since_fired[:, ::12] = 1e10  # 8% of the latents dead
        with contextlib.ExitStack() as stack:
            for obj, name, value in changes:
                stack.enter_context(setting(obj, name, value))
            step()
    return run


def plain_dense_step(device):
    """A plain TopK + AuxK step in torch: topk, scatter, matmul (SAELens's formulation)."""
    source, generator = task_p_source(device), [torch.Generator(device).manual_seed(0)]
    W_enc = torch.nn.Parameter(torch.randn(128, 1024, device=device) / 128 ** 0.5)
    b_enc = torch.nn.Parameter(torch.zeros(1024, device=device))
    W_dec = torch.nn.Parameter(W_enc.detach().T.clone())
    b_dec = torch.nn.Parameter(torch.zeros(128, device=device))
    optimizer = torch.optim.Adam([W_enc, b_enc, W_dec, b_dec], lr=3e-3)
    dead = torch.zeros(1024, dtype=torch.bool, device=device)
    dead[::12] = True

    def run():
        x = source.sample_hidden(1024, generator)[:, 0]
        pre = (x - b_dec) @ W_enc + b_enc
        top, index = pre.topk(8, dim=-1)
        x_hat = torch.zeros_like(pre).scatter(-1, index, torch.relu(top)) @ W_dec + b_dec
        top, index = pre.masked_fill(~dead, -torch.inf).topk(64, dim=-1)
        e_hat = torch.zeros_like(pre).scatter(-1, index, torch.relu(top)) @ W_dec
        loss = (x - x_hat).pow(2).sum(-1).mean() + ((x - x_hat).detach() - e_hat).pow(2).sum(-1).mean() / 32
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return run


def compare_steps(device="cpu", rounds: int = 10) -> dict[str, float]:
    """samples/s of each step variant (see the module docstring)."""
    variants = {}
    for recipe in ("topk", "batchtopk"):
        variants[f"{recipe}, dense codes"] = training_step(recipe, device, codes.DENSE)
        variants[f"{recipe}, sparse codes"] = training_step(recipe, device, codes.SPARSE)
    variants["topk, sparse codes, AuxK over every latent"] = training_step(
        "topk", device, codes.SPARSE._replace(top_k_among=codes.dense_top_k_among))
    variants["batchtopk, sparse codes, batch cut by topk"] = training_step(
        "batchtopk", device, codes.SPARSE._replace(batch_top_k=codes.batch_top_k))
    variants["plain dense TopK + AuxK step"] = plain_dense_step(device)
    return rates(variants, rounds, device, samples=P["batch"])


def compare(device="cpu", rounds: int = 10) -> dict[str, float]:
    """Each choice's speed-up over the formulation it replaces (> 1: the choice is faster), end to end."""
    return ratios(compare_steps(device, rounds))


def ratios(steps: dict[str, float]) -> dict[str, float]:
    """The step variants' speed ratios (> 1: the first named is faster)."""
    return {
        "codes, topk step: sparse / dense": steps["topk, sparse codes"] / steps["topk, dense codes"],
        "codes, batchtopk step: sparse / dense": steps["batchtopk, sparse codes"] / steps["batchtopk, dense codes"],
        "AuxK, sparse topk step: dead columns / every latent": steps["topk, sparse codes"]
        / steps["topk, sparse codes, AuxK over every latent"],
        "batch cut, sparse batchtopk step: guessed / topk": steps["batchtopk, sparse codes"]
        / steps["batchtopk, sparse codes, batch cut by topk"],
        "toysuper topk (sparse) / plain dense step": steps["topk, sparse codes"] / steps["plain dense TopK + AuxK step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = compare_steps(args.device, args.rounds)
    for name, rate in steps.items():
        print(f"{name:60s} {rate:10,.0f} samples/s")
    for name, ratio in ratios(steps).items():
        print(f"{name:60s} {ratio:9.2f}x")


if __name__ == "__main__":
    main()
