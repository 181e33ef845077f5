"""The peer comparison: the same BatchTopK tasks trained by SAELens's synthetic pipeline and by toysuper,
on the same device, in one process.

Task P: 1024 ground-truth features in 128 dimensions, each firing with probability 8/1024; a BatchTopK
SAE with k = 8 and 1024 latents, batch 1024. SAELens builds its data with its FeatureDictionary
(orthogonalised random directions, its default) and ActivationGenerator (magnitudes ReLU(N(0.5, 0.29²)),
matching U[0, 1]'s mean and spread) and trains with `train_toy_sae` (its defaults); toysuper uses a
DictionarySource of random unit directions with U[0, 1] magnitudes and its `batchtopk` recipe's defaults.
Both SAEs are graded by toysuper.evaluate against the directions that made their own data.

Task W (a SynthSAEBench-sized world): 16,384 features in 768 dimensions firing by SAELens's
zipfian_firing_probabilities(exponent 0.6, max 0.3, min 5e-4) (mean L0 ≈ 29.5; toysuper's
Zipf(0.6, p_max=0.3, p_min=5e-4) is the same law), magnitude 1, BatchTopK k = 32, width 16,384, batch
4096; timed only (300 steps on a GPU, a few on a CPU, where a step of this size takes seconds).

Needs the `[bench]` extra (sae-lens). SAELens imports wandb at import time; where wandb is missing, a stub
module stands in (it is never called).

    python benchmarks/peer_saelens.py [--device cuda] [--samples 300000] [--world-steps 5]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import sys
import time
import types

import torch

import toysuper as ts

P = {"n_features": 1024, "d_hidden": 128, "d_sae": 1024, "k": 8, "batch": 1024}
W = {"n_features": 16384, "d_hidden": 768, "d_sae": 16384, "k": 32, "batch": 4096}
P_FIRING = 8 / 1024
W_ZIPF = {"exponent": 0.6, "p_max": 0.3, "p_min": 5e-4}


def import_saelens():
    """SAELens's pieces, with a stub wandb module where wandb is not installed (SAELens imports it)."""
    if importlib.util.find_spec("wandb") is None and "wandb" not in sys.modules:
        stub = types.ModuleType("wandb")
        stub.__spec__ = importlib.machinery.ModuleSpec("wandb", None)
        sys.modules["wandb"] = stub
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, train_toy_sae, zipfian_firing_probabilities

    return BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, ActivationGenerator, FeatureDictionary, train_toy_sae, \
        zipfian_firing_probabilities


def synchronize(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class SingleSAE:
    """Wraps an outside SAE with encode(x: (batch, d)) and W_dec (d_sae, d) for toysuper.evaluate."""

    def __init__(self, encode, decoder: torch.Tensor, b_dec: torch.Tensor):
        self._encode, self.W = encode, decoder.detach()
        self.b = b_dec.detach()
        self.n_instances, (self.d_sae, self.d_hidden) = 1, self.W.shape
        self.device = self.W.device

    def encode(self, x):
        return self._encode(x[:, 0]).unsqueeze(1)

    def decode(self, acts):
        return (acts[:, 0] @ self.W + self.b).unsqueeze(1)

    def decoder_directions(self):
        return (self.W / self.W.norm(dim=-1, keepdim=True).clamp_min(1e-12)).unsqueeze(0)


def _grades(report) -> dict:
    summary = report.summary.iloc[0]
    return {"recovered@0.9": summary["recovered@0.9"], "mmcs": summary["mmcs"], "l0": summary["l0"],
            "dead_fraction": summary["dead_fraction"]}


_DICTIONARIES: dict = {}


def run_saelens(task: dict, samples: int, firing, device="cpu", precision: str = "float32", grade: bool = True,
                seed: int = 0) -> dict:
    """SAELens's synthetic pipeline on `task`; its feature dictionary is built once per task, outside the clock."""
    SAE, Config, Generator, Dictionary, train, _ = import_saelens()
    torch.manual_seed(seed)
    key = (task["n_features"], task["d_hidden"], str(device))
    if key not in _DICTIONARIES:
        _DICTIONARIES[key] = Dictionary(task["n_features"], task["d_hidden"], seed=seed, device=device)
    dictionary = _DICTIONARIES[key]
    magnitudes = {"std_firing_magnitudes": 12 ** -0.5, "mean_firing_magnitudes": 0.5} if task is P else \
        {"std_firing_magnitudes": 0.0, "mean_firing_magnitudes": 1.0}
    generator = Generator(task["n_features"], firing, device=device, **magnitudes)
    sae = SAE(Config(d_in=task["d_hidden"], d_sae=task["d_sae"], k=task["k"], device=str(device)))
    bf16 = precision == "bfloat16"
    synchronize(device)
    start = time.perf_counter()
    train(sae, dictionary, generator, training_samples=samples, batch_size=task["batch"], device=str(device),
          autocast_sae=bf16, autocast_data=bf16)
    synchronize(device)
    train_s = time.perf_counter() - start
    row = {"pipeline": f"SAELens {precision}", "samples": samples, "train_s": train_s, "samples_per_s": samples / train_s}
    if grade:
        source = ts.DictionarySource(dictionary.feature_vectors.detach(),
                                     ts.FeatureDistribution(task["n_features"], firing, device=device))
        with torch.no_grad():
            row.update(_grades(ts.evaluate(SingleSAE(sae.encode, sae.W_dec, sae.b_dec), source, n_samples=20_000,
                                           quiet=True)))
    return row


def run_toysuper(task: dict, samples: int, firing, device="cpu", precision: str = "float32", grade: bool = True,
                 seed: int = 0, magnitude=None) -> dict:
    """toysuper on `task`: a DictionarySource and the batchtopk recipe at its defaults, except that it cuts
    batch-wide from the first step as SAELens does (topk_warmup 0; the default's TopK warm-up is another
    algorithm, and a cheaper step)."""
    directions = ts.random_directions(task["n_features"], task["d_hidden"], seed=seed, device=device)[0]
    source = ts.DictionarySource(directions, ts.FeatureDistribution(task["n_features"], firing, magnitude=magnitude,
                                                                    device=device))
    sae = ts.SAE(task["d_hidden"], task["d_sae"], recipe="batchtopk", k=task["k"], topk_warmup=0.0,
                 seed=seed, device=device)
    steps = max(1, samples // task["batch"])
    synchronize(device)
    start = time.perf_counter()
    result = ts.train_sae(sae, source, steps=steps, batch_size=task["batch"], seed=seed, quiet=True,
                          precision=precision, log_every=10**9)
    synchronize(device)
    train_s = time.perf_counter() - start
    row = {"pipeline": f"toysuper {precision}", "samples": steps * task["batch"], "train_s": train_s,
           "samples_per_s": steps * task["batch"] / train_s, "captured": result.captured}
    if grade:
        row.update(_grades(ts.evaluate(sae, source, n_samples=20_000, quiet=True)))
    return row


WARM_UP_SAMPLES = 20_480


def compare_task_p(samples: int = 300_000, rounds: int = 1, device="cpu", precisions=("float32", "bfloat16")
                   ) -> list[dict]:
    """Task P, toysuper in each precision and SAELens in float32, `rounds` times, interleaved so that a slow
    spell of a shared machine cannot favour one side. Each row: the median speed over rounds and, as
    "speedup", the median over rounds of its speed over SAELens's speed in the same round."""
    for precision in precisions:  # warm-up: thread pools, kernel choice, first allocations
        run_toysuper(P, WARM_UP_SAMPLES, P_FIRING, device, precision, grade=False)
    run_saelens(P, WARM_UP_SAMPLES, P_FIRING, device, grade=False)
    results = []
    for _ in range(rounds):
        theirs = run_saelens(P, samples, P_FIRING, device)
        results.append([theirs] + [run_toysuper(P, samples, P_FIRING, device, precision) for precision in precisions])
    rows = []
    for column in zip(*results):  # one pipeline over the rounds
        row = dict(column[0])
        row["samples_per_s"] = statistics.median(r["samples_per_s"] for r in column)
        row["speedups"] = [r["samples_per_s"] / result[0]["samples_per_s"] for r, result in zip(column, results)]
        row["speedup"] = statistics.median(row["speedups"])
        rows.append(row)
    return rows


def compare_task_w(steps: int = 5, device="cpu", precisions=("float32", "bfloat16")) -> list[dict]:
    """Task W, timed only: for each precision SAELens then toysuper, `steps` steps each after a warm-up."""
    zipf = import_saelens()[-1](W["n_features"], W_ZIPF["exponent"], W_ZIPF["p_max"], W_ZIPF["p_min"]).to(device)
    ours = ts.Zipf(**W_ZIPF)
    samples = steps * W["batch"]
    rows = []
    for precision in precisions:
        run_saelens(W, W["batch"] * 2, zipf, device, precision, grade=False)  # warm-up
        theirs = run_saelens(W, samples, zipf, device, precision, grade=False)
        run_toysuper(W, W["batch"] * 2, ours, device, precision, grade=False, magnitude=ts.Constant(1.0))
        row = run_toysuper(W, samples, ours, device, precision, grade=False, magnitude=ts.Constant(1.0))
        row["speedup"] = row["samples_per_s"] / theirs["samples_per_s"]
        rows += [theirs, row]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300_000, help="task P samples per run")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--world-steps", type=int, default=5, help="task W steps per run (0: skip task W)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for row in compare_task_p(args.samples, args.rounds, args.device):
        print("P", "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    if args.world_steps:
        for row in compare_task_w(args.world_steps, args.device):
            print("W", "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)


if __name__ == "__main__":
    main()
