"""The peer comparison: the same BatchTopK task trained by SAELens's synthetic pipeline and by toysuper.

Task (issue 7's reference point): 1024 ground-truth features in 128 dimensions, each firing
with probability 8/1024; a BatchTopK SAE with k = 8 and 1024 latents, batch 1024, the same
number of training samples for both. SAELens builds its data with its own FeatureDictionary
(orthogonalised random directions, its default) and ActivationGenerator (magnitudes
ReLU(N(0.5, 0.29²)), matching U[0, 1]'s mean and spread) and trains with `train_toy_sae`
(its defaults). toysuper uses a DictionarySource of random unit directions with U[0, 1]
magnitudes and its `batchtopk` recipe with the recipe's defaults. Both SAEs are graded by
toysuper.grade.evaluate against the directions that made their own data.

Needs the `[bench]` extra (sae-lens):  python benchmarks/peer_saelens.py [--samples 300000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import toysuper as ts

D_HIDDEN, N_FEATURES, D_SAE, K, BATCH = 128, 1024, 1024, 8, 1024
FIRING = 8 / 1024


class SingleSAE:
    """Wraps an outside SAE with encode(x: (batch, d)) and W_dec (d_sae, d) for toysuper.grade.evaluate."""

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


def run_saelens(samples: int, seed: int = 0) -> dict:
    from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.synthetic import ActivationGenerator, FeatureDictionary, train_toy_sae

    torch.manual_seed(seed)
    start = time.perf_counter()
    feature_dict = FeatureDictionary(N_FEATURES, D_HIDDEN, seed=seed)
    build_s = time.perf_counter() - start
    generator = ActivationGenerator(N_FEATURES, FIRING, std_firing_magnitudes=12 ** -0.5, mean_firing_magnitudes=0.5)
    sae = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D_HIDDEN, d_sae=D_SAE, k=K, device="cpu"))
    start = time.perf_counter()
    train_toy_sae(sae, feature_dict, generator, training_samples=samples, batch_size=BATCH)
    train_s = time.perf_counter() - start
    directions = feature_dict.feature_vectors.detach()
    source = ts.DictionarySource(directions, ts.FeatureDistribution(N_FEATURES, FIRING, device="cpu"))
    with torch.no_grad():
        wrapped = SingleSAE(sae.encode, sae.W_dec, sae.b_dec)
        report = ts.evaluate(wrapped, source, n_samples=20_000)
    return {"pipeline": "SAELens", "samples": samples, "train_s": train_s, "setup_s": build_s,
            "samples_per_s": samples / train_s, **_grades(report)}


def run_toysuper(samples: int, seed: int = 0, precision: str = "float32") -> dict:
    start = time.perf_counter()
    directions = ts.random_directions(N_FEATURES, D_HIDDEN, seed=seed, device="cpu")[0]
    source = ts.DictionarySource(directions, ts.FeatureDistribution(N_FEATURES, FIRING, device="cpu"))
    sae = ts.SAE(D_HIDDEN, D_SAE, recipe="batchtopk", k=K, seed=seed, device="cpu")
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    ts.train_sae(sae, source, steps=samples // BATCH, batch_size=BATCH, seed=seed, quiet=True, precision=precision)
    train_s = time.perf_counter() - start
    report = ts.evaluate(sae, source, n_samples=20_000)
    return {"pipeline": f"toysuper {precision}", "samples": samples // BATCH * BATCH, "train_s": train_s,
            "setup_s": build_s,
            "samples_per_s": samples // BATCH * BATCH / train_s, **_grades(report)}


def _grades(report) -> dict:
    summary = report.summary.iloc[0]
    return {"recovered@0.9": summary["recovered@0.9"], "mmcs": summary["mmcs"], "l0": summary["l0"],
            "dead_fraction": summary["dead_fraction"]}


WARM_UP_SAMPLES = 20_480


def compare(samples: int = 300_000, rounds: int = 1) -> list[dict]:
    """Both pipelines on the same task and number of samples: toysuper in float32 (its default),
    SAELens, then toysuper with bf16 autocast, whose dense selection matmul runs in bf16 (4× the
    float32 speed on a CPU with AVX512-BF16) while the kept latents are re-scored in float32.
    SAELens runs between the two so that a slow spell of a shared machine cannot favour one side.

    With several `rounds` each pipeline trains that many times (same seeds, so the same SAEs),
    and each row reports its median speed and, as "speedup", the median over rounds of its
    speed over SAELens's speed in the same round ("speedups": every round's): on a shared
    machine whose speed drifts by a third over minutes, one round's ratio is a noisy figure.

    Each first trains a short run that is not timed, so that none pays for the process's
    one-time start-up (thread pools, kernel selection, first allocations) in its figure.
    """
    run_toysuper(WARM_UP_SAMPLES)
    run_toysuper(WARM_UP_SAMPLES, precision="bfloat16")
    run_saelens(WARM_UP_SAMPLES)
    results = [[run_toysuper(samples), run_saelens(samples), run_toysuper(samples, precision="bfloat16")]
               for _ in range(rounds)]
    rows = []
    for column in zip(*results):  # one pipeline over the rounds
        row = dict(column[0])
        row["samples_per_s"] = statistics.median(r["samples_per_s"] for r in column)
        row["train_s"] = statistics.median(r["train_s"] for r in column)
        row["speedups"] = [r["samples_per_s"] / theirs["samples_per_s"]
                           for r, theirs in zip(column, (result[1] for result in results))]
        row["speedup"] = statistics.median(row["speedups"])
        row["rounds"] = rounds
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = compare(args.samples, args.rounds)
    for row in rows:
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    for ours in (rows[0], rows[2]):
        print(f"{ours['pipeline']} / SAELens samples/s: {ours['speedup']:.2f}x (median over {args.rounds} rounds)")


if __name__ == "__main__":
    main()
