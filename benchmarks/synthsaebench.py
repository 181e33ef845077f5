"""SynthSAEBench's table reproduced (issue 16, item 5): four recipes at two L0s, several seeds.

Chanin & Garriga-Alonso 2026, "SynthSAEBench" (arXiv 2602.14687): SAEs of width 4096 trained on
the SynthSAEBench-16k world for 200M samples (batch 1024, lr 3e-4) and graded by SAELens's
`eval_sae_on_synthetic_data` on 1M held-out samples. toysuper trains each recipe's L0s and seeds
as the instances of one SAE (one pass per recipe), grades them with the same metrics (the sb_*
columns of `toysuper.evaluate`, tested equal to SAELens's) and prints them beside the published
means (sd over seeds <= 0.005 there).

    python benchmarks/synthsaebench.py --device cuda        # the published size (needs a GPU)
    python benchmarks/synthsaebench.py --features 4096 --samples 800000 --seeds 0 1 --eval-samples 20000 \
        --lr 3e-3 --threads 1 --out benchmarks/results/synthsaebench-cpu
                                                            # the same structure at a quarter size, on a CPU
                                                            # (about 25 min at 1 thread; results/synthsaebench-cpu.md)
    python benchmarks/synthsaebench.py --world saelens ...  # SAELens's own SyntheticModel, same config and size
    python benchmarks/synthsaebench.py --world DIR ...      # a saved SyntheticModel, e.g. the released
                                                            # decoderesearch/synth-sae-bench-16k-v1
Writes OUT.csv (one row per SAE) and OUT.md (the table). This is a benchmark: it asserts nothing.

How it runs. The world is `toysuper.worlds.synthsaebench(features, d_hidden)` (at 16,384 features
SynthSAEBench-16k, seed 42; smaller sizes keep its structure, see worlds.py). Instance (L0, seed s) reads
data stream s: every recipe and L0 at seed s sees the same samples (a paired comparison), each distinct
stream is drawn once per batch and shared by the instances that read it (`Streams`; the same numbers as
per-instance draws with equal seeds, at a fraction of the cost), and on a CPU the drawn batches are kept
and replayed to the next recipe (`--keep-draws`, default on a CPU; off on CUDA, whose step is captured).
Instance (L0, s) starts from SAE seed s. Every SAE is graded on the same held-out samples.
At another size the L0s are scaled to the world: by the L0 of the `width` most frequent features over
that of the 16k world's 4,096 (25.2; the published L0 25 is the true L0 of what a width-4096 SAE can hold),
e.g. 10 and 12 in the 4,096-feature world. Matryoshka's prefixes scale with the width (1/32, 1/8, 1/2).

The published setup (decoderesearch/synth-sae-bench-experiments, experiments/sweeps/common.py at
0bdace3, the code of the paper's first version, SAELens 6.37's SyntheticSAERunner; the repository's
v2 of 2026-05-29 later moved JumpReLU to DeepMind's step penalty, which this table does not use):
Adam (0.9, 0.999) at a constant lr 3e-4, gradient norm clipped to 1, b_dec started at 0, bf16 autocast,
a latent dead after 1000 steps without firing; then per recipe, with toysuper's closest recipe:

- BatchTopK (SAELens BatchTopKTrainingSAE, k = L0) -> `batchtopk`, k = L0, k_aux = d_hidden/2, AuxK
  weight 1, topk_warmup 0 (batch-wide from the first step, as published; toysuper's default selects
  per sample for the first 90% of training, README "Recipe defaults across task shapes"). Differences: SAELens scales AuxK by min(dead / k_aux, 1) (under Adam a constant factor on
  the only loss that reaches a dead latent changes little); SAELens keeps a free decoder and divides
  the activations by its row norms (`rescale_acts_by_decoder_norm`), toysuper holds the rows at unit
  norm (the same function, different Adam dynamics), and SAELens starts them at norm 0.1; the
  inference threshold is SAELens's EMA (0.01) of the smallest kept activation, toysuper's a running mean
  over the first 100 batches, then the same EMA.
- Matryoshka (SAELens MatryoshkaBatchTopKTrainingSAE, inner widths [128, 512, 2048]) -> `matryoshka`
  with its default prefixes, the same widths at 4096, and `prefix_balance` 1 (every prefix's error at
  full weight; toysuper's default is 0.25, README "Recipe defaults across task shapes"). Difference:
  SAELens's `use_matryoshka_aux_loss` lets each level's dead latents reconstruct that level's residual;
  toysuper's AuxK is BatchTopK's, over the whole width. Otherwise as BatchTopK.
- Standard L1 (SAELens StandardTrainingSAE with an L0 autotuner: loss ||x - x̂||² + λ m Σ_i f_i ||W_dec,i||,
  λ = 2 warmed up over the first third, then the controller from a third) -> `anthropic_2024`,
  l1_coefficient 2, l1_warmup 1/3, target_l0 = L0 from target_l0_start 1/3 (recipes/target_l0.py is that
  controller; its gain is SynthSAEBench's 3e-4 at 195k steps, larger for short runs), inputs not
  scaled (SAELens's `normalize_activations="none"`; toysuper's E||x|| = √d scaling is turned off).
  Difference: SAELens encodes x - b_dec, anthropic_2024 encodes x (the same functions, b_dec then
  reaches the loss through the decoder only).
- JumpReLU (SAELens 6.37 JumpReLUTrainingSAE: log-threshold, straight-through rectangle kernel; tanh
  sparsity of scale 4, bandwidth 2, threshold 0.5 at start, l0_coefficient 0.2 autotuned from step 0, no
  warm-up, inputs scaled to E||x|| = √d) -> `jumprelu` with those settings (l0_warmup 0) and the same input
  scaling (done here: toysuper's jumprelu scales to E||x||² = 1, so train_sae's scaling is off and
  `Streams` scales, folded into the weights afterwards). Differences: SAELens revives dead latents with
  a TopK auxiliary loss (k_aux = d/2, weight 1, its reconstruction including b_dec); toysuper's jumprelu
  has no AuxK and uses Anthropic's pre-activation term instead, at 3e-6 (the value SynthSAEBench's code
  offers for its `use_topk_aux_loss=False` variant), applied to every latent rather than to the dead
  ones; SAELens's decoder is free (rows of norm 0.5 at start, the tanh term weighted by their norms),
  toysuper's held at unit norm; SAELens encodes x - b_dec, toysuper's jumprelu encodes x.

Not reproduced: bf16 autocast (toysuper trains in float32 unless `--precision bfloat16`, which
autocasts the forward pass as SAELens did); SAELens estimates the input scale on 1,000 batches, here on
16,384 samples. Published seeds ran as separate processes with unseeded initialisation and data.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import toysuper as ts  # noqa: E402
from toysuper.sources import Batch  # noqa: E402

METRICS = ["sb_f1", "sb_mcc", "sb_uniqueness", "sb_explained_variance"]
RECIPES = ["BatchTopK", "Matryoshka", "Standard L1", "JumpReLU"]
PUBLISHED = {  # (L0, recipe): F1, MCC, uniqueness, explained variance; means over seeds (issue 16)
    (25, "BatchTopK"): (0.7316, 0.7574, 0.9837, 0.7923),
    (25, "Matryoshka"): (0.8793, 0.7927, 0.9987, 0.7792),
    (25, "Standard L1"): (0.5562, 0.6039, 0.8976, 0.7654),
    (25, "JumpReLU"): (0.7317, 0.7527, 0.9885, 0.7951),
    (20, "BatchTopK"): (0.8183, 0.7526, 0.9760, 0.7889),
    (20, "Matryoshka"): (0.8601, 0.7455, 0.9874, 0.7699),
    (20, "Standard L1"): (0.5777, 0.5834, 0.8528, 0.7501),
    (20, "JumpReLU"): (0.8241, 0.7434, 0.9781, 0.7906),
}
PUBLISHED_L0S = (20, 25)
PUBLISHED_WIDTH_L0 = 25.2  # the true L0 of the 16k world's 4,096 most frequent features (worlds.py)
TARGETS = {"sb_f1": 0.02, "sb_mcc": 0.01, "sb_explained_variance": 0.01}  # issue 16's tolerances on a GPU
DEAD_STEPS = 1000  # SAELens's dead_feature_window, in steps
NORM_SAMPLES = 16_384  # samples behind JumpReLU's input scale (train_sae's own INIT_SAMPLES)
EVAL_SEED = 12_345


class Streams:
    """A one-instance world seen by many instances: instance i reads data stream `streams[i]`.

    Each distinct stream is drawn once per call, from the generator train_sae gives the first
    instance that reads it (so the result equals per-instance draws with equal seeds), scaled by
    `scale`, and shared. With `keep`, the drawn batches are kept and `rewind()` replays them in order to
    the next pass (a CPU's shortcut: the same numbers a fresh draw would give, as train_sae reseeds its
    generators every call). For `evaluate`, one generator draws a single stream for every instance.
    """

    def __init__(self, world, streams: list[int], scale: float = 1.0, keep: bool = False):
        self.world, self.scale = world, scale
        self.ids = sorted(set(streams))
        self.first = [streams.index(s) for s in self.ids]  # the instance whose generator draws each stream
        self.index = torch.tensor([self.ids.index(s) for s in streams], device=world.device)
        self.n_instances, self.n_features, self.d_hidden = len(streams), world.n_features, world.d_hidden
        self.device, self.dist = world.device, world.dist
        self.instances = [0] * len(streams)  # which world instance each instance shows (for the grader)
        self.tape, self.position, self.draw_s = ([] if keep else None), 0, 0.0

    def rewind(self, scale: float = 1.0) -> None:
        self.position, self.scale = 0, scale

    def _generators(self, generator) -> list:
        if isinstance(generator, ts.streams.Streams):  # counter-based streams: a one-instance view each
            return [generator.select([i]) for i in self.first]
        if isinstance(generator, (list, tuple)):
            return [[generator[i]] for i in self.first]
        if len(self.ids) > 1:
            raise ValueError("one generator cannot draw several streams apart; give one per instance")
        return [generator]

    def _spread(self, per_stream: torch.Tensor) -> torch.Tensor:
        """(batch, streams, ·) -> (batch, inst, ·)."""
        if len(self.ids) == 1:
            return per_stream.expand(-1, self.n_instances, -1)
        return per_stream.index_select(1, self.index)

    def sample_hidden(self, batch_size: int, generator=None) -> torch.Tensor:
        if self.tape is not None and self.position < len(self.tape):
            hidden = self.tape[self.position]
        else:
            start = time.perf_counter()
            hidden = torch.cat([self.world.sample_hidden(batch_size, g) for g in self._generators(generator)], 1)
            self.draw_s += time.perf_counter() - start
            if self.tape is not None:
                self.tape.append(hidden)
        if hidden.shape[0] != batch_size:
            raise ValueError(f"replayed batch has {hidden.shape[0]} rows, asked for {batch_size}")
        self.position += 1
        return self._spread(hidden) * self.scale

    def sample(self, batch_size: int, generator=None) -> Batch:
        draws = [self.world.sample(batch_size, g) for g in self._generators(generator)]
        hidden = torch.cat([d.hidden for d in draws], 1)
        return Batch(self._spread(hidden) * self.scale, self._spread(torch.cat([d.features for d in draws], 1)))

    def true_directions(self) -> torch.Tensor:
        return self.world.true_directions()[:1].expand(self.n_instances, -1, -1)

    def gradeable(self) -> torch.Tensor:
        return self.world.gradeable()[:1].expand(self.n_instances, -1)


def build_world(kind: str, n_features: int, d_hidden: int, device):
    """toysuper's SynthSAEBench world, SAELens's SyntheticModel built from the same config, or a saved one."""
    if kind == "toysuper":
        return ts.worlds.synthsaebench(n_features, d_hidden, seed=42, device=device)
    from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig
    if kind != "saelens":
        return ts.SAELensWorld(kind, device=device)
    from sae_lens.synthetic.firing_magnitudes import FoldedNormalMagnitudeConfig, LinearMagnitudeConfig
    from sae_lens.synthetic.synthetic_model import (HierarchyConfig, LowRankCorrelationConfig,
                                                    OrthogonalizationConfig, ZipfianFiringProbabilityConfig)
    config = SyntheticModelConfig(  # experiments/sweeps/common.py's get_base_model_config, at this size
        num_features=n_features, hidden_dim=d_hidden, seed=42, bias=0.5,
        firing_probability=ZipfianFiringProbabilityConfig(max_prob=0.4, min_prob=5e-4, exponent=0.5),
        hierarchy=HierarchyConfig(total_root_nodes=max(1, round(128 * n_features / 16384)), branching_factor=4,
                                  mutually_exclusive_portion=1.0, mutually_exclusive_min_depth=0,
                                  compensate_probabilities=True, scale_children_by_parent=True, max_depth=3),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        correlation=LowRankCorrelationConfig(correlation_scale=0.1, rank=25),
        orthogonalization=OrthogonalizationConfig(num_steps=100, lr=3e-4))
    return ts.SAELensWorld(SyntheticModel(config, device=str(device)))


def scaled_l0s(world, width: int) -> list[int]:
    """The published L0s, scaled by the true L0 of the world's `width` most frequent features over 25.2."""
    prob = getattr(world.dist, "firing_prob", None)
    if prob is None:  # a world whose rates are not known exactly: the published L0s
        return list(PUBLISHED_L0S)
    ratio = prob[0].float().sort(descending=True).values[:width].sum().item() / PUBLISHED_WIDTH_L0
    return [max(1, round(l0 * ratio)) for l0 in PUBLISHED_L0S]


def plan(name: str, l0: list[float], d_hidden: int) -> tuple[str, dict, bool]:
    """(toysuper recipe, hyperparameters (one value per instance where they differ), scale to E||x|| = √d)."""
    if name in ("BatchTopK", "Matryoshka"):
        published = {"k": l0, "k_aux": d_hidden // 2, "aux_coefficient": 1.0, "topk_warmup": 0.0}
        if name == "Matryoshka":
            published["prefix_balance"] = 1.0  # every prefix's error at full weight, as published
        return name.lower(), published, False
    if name == "Standard L1":
        return "anthropic_2024", {"l1_coefficient": 2.0, "l1_warmup": 1 / 3, "target_l0": l0,
                                  "target_l0_start": 1 / 3}, False
    if name == "JumpReLU":
        return "jumprelu", {"l0_coefficient": 0.2, "l0_warmup": 0.0, "tanh_scale": 4.0, "bandwidth": 2.0,
                            "threshold_init": 0.5, "pre_act_coefficient": 3e-6, "target_l0": l0,
                            "target_l0_start": 0.0}, True
    raise ValueError(f"recipe must be one of {RECIPES}, got {name!r}")


def sqrt_d_scale(world, n: int = NORM_SAMPLES) -> float:
    """SAELens's `expected_average_only_in`: the factor that makes E||x|| = √d_hidden."""
    generator = torch.Generator(device=world.device).manual_seed(987_654)
    norms = torch.cat([world.sample_hidden(min(8192, n - i), [generator]).norm(dim=-1).flatten()
                       for i in range(0, n, 8192)])
    return math.sqrt(world.d_hidden) / norms.mean().item()


def run_recipe(name: str, world, streams: Streams, eval_source: Streams, l0s: list[int], seeds: list[int],
               args) -> pd.DataFrame:
    """One pass: every (L0, seed) of a recipe as the instances of one SAE, trained and graded."""
    instances = [(l0, seed) for l0 in l0s for seed in seeds]
    recipe, hyperparameters, normalise = plan(name, [float(l0) for l0, _ in instances], world.d_hidden)
    if name == "Standard L1" and args.l1_coefficient is not None:
        hyperparameters["l1_coefficient"] = args.l1_coefficient
    scale = sqrt_d_scale(world) if normalise else 1.0
    streams.rewind(scale)
    sae = ts.SAE(world.d_hidden, args.width, len(instances), recipe=recipe, seed=[s for _, s in instances],
                 device=world.device, **hyperparameters)
    steps = max(1, args.samples // args.batch_size)
    draw_before, start = streams.draw_s, time.perf_counter()
    result = ts.train_sae(sae, streams, steps=steps, batch_size=args.batch_size, lr=args.lr,
                          seed=[s for _, s in instances], betas=(0.9, 0.999), grad_clip=1.0, lr_warmup=0.0,
                          lr_decay=0.0, b_dec_init="zeros", resample=False, scale_inputs=False,
                          dead_window=args.dead_steps * args.batch_size, precision=args.precision,
                          capture=args.capture, log_every=max(100, steps // 20), quiet=args.quiet)
    if world.device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    if scale != 1.0:  # trained on scaled inputs: fold the scale in, so that it reads raw ones
        sae.fold_input_scale(torch.full((len(instances),), scale, device=world.device))
    start = time.perf_counter()
    report = ts.evaluate(sae, eval_source, n_samples=args.eval_samples, seed=EVAL_SEED, quiet=args.quiet)
    eval_s = time.perf_counter() - start
    rows = report.summary[METRICS + ["sb_l0", "sb_dead_latents", "sb_shrinkage", "sb_true_l0"]].copy()
    rows.insert(0, "recipe", name)
    rows.insert(1, "toysuper_recipe", recipe)
    rows.insert(2, "l0_target", [l0 for l0, _ in instances])
    rows.insert(3, "seed", [s for _, s in instances])
    rows["train_s"], rows["draw_s"], rows["eval_s"] = train_s, streams.draw_s - draw_before, eval_s
    rows["captured"] = result.captured
    return rows


def table(rows: pd.DataFrame, l0s: list[int]) -> pd.DataFrame:
    """Mean and sd over seeds per (L0, recipe), beside the published means (matched by L0's rank)."""
    published_l0 = dict(zip(sorted(l0s), PUBLISHED_L0S))
    out = []
    for (l0, recipe), group in rows.groupby(["l0_target", "recipe"], sort=False):
        row = {"L0": l0, "published L0": published_l0[l0], "recipe": recipe, "seeds": len(group),
               "L0 reached": group["sb_l0"].mean(), "dead": group["sb_dead_latents"].mean()}
        for metric, published in zip(METRICS, PUBLISHED[(published_l0[l0], recipe)]):
            row[metric] = group[metric].mean()
            row[f"{metric} sd"] = group[metric].std(ddof=1) if len(group) > 1 else float("nan")
            row[f"{metric} published"] = published
        out.append(row)
    order = {recipe: i for i, recipe in enumerate(RECIPES)}
    return pd.DataFrame(out).sort_values(["L0", "recipe"], key=lambda c: c.map(order) if c.name == "recipe"
                                         else -c).reset_index(drop=True)


def markdown(summary: pd.DataFrame, passes: pd.DataFrame, header: str) -> str:
    names = {"sb_f1": "F1", "sb_mcc": "MCC", "sb_uniqueness": "uniqueness", "sb_explained_variance": "expl. var."}
    lines = [header, "", "| L0 (published L0) | recipe | " + " | ".join(
        f"{names[m]} (published)" for m in METRICS) + " | L0 reached | dead |", "|" + "---|" * 8]
    for row in summary.to_dict("records"):
        cells = [f"{row['L0']} ({row['published L0']})", row["recipe"]]
        for metric in METRICS:
            sd = "" if math.isnan(row[f"{metric} sd"]) else f" ± {row[f'{metric} sd']:.3f}"
            cells.append(f"{row[metric]:.3f}{sd} ({row[f'{metric} published']:.3f})")
        cells += [f"{row['L0 reached']:.1f}", f"{row['dead']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| pass | instances | train s | of which drawing s | grade s |", "|---|---|---|---|---|"]
    for row in passes.to_dict("records"):
        lines.append(f"| {row['recipe']} | {row['instances']} | {row['train_s']:.0f} | {row['draw_s']:.0f} | "
                     f"{row['eval_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=16384, help="world size (16384: SynthSAEBench-16k)")
    parser.add_argument("--d-hidden", type=int, default=None, help="default: features × 768 / 16384")
    parser.add_argument("--width", type=int, default=None, help="SAE latents (default: features / 4)")
    parser.add_argument("--world", default="toysuper",
                        help="toysuper (default), saelens (SAELens's SyntheticModel, same config) or a saved one's DIR")
    parser.add_argument("--recipes", nargs="+", default=RECIPES, choices=RECIPES)
    parser.add_argument("--l0s", type=int, nargs="+", default=None,
                        help="default: 20 and 25, scaled to the world's size (see the docstring)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=200_000_000, help="training samples per SAE")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--l1-coefficient", type=float, default=None,
                        help="Standard L1's starting λ (default SynthSAEBench's 2); a short run's controller "
                             "has no time to move λ far: start near the end value, above rather than below "
                             "(results/synthsaebench-cpu.md)")
    parser.add_argument("--eval-samples", type=int, default=1_000_000)
    parser.add_argument("--dead-steps", type=int, default=DEAD_STEPS,
                        help="steps without firing after which a latent is dead (AuxK's; SAELens's 1000)")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--capture", default="auto", choices=["auto", "off"])
    parser.add_argument("--keep-draws", choices=["auto", "on", "off"], default="auto",
                        help="keep the drawn batches and replay them to every recipe (auto: on a CPU)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", default=None, help="writes OUT.csv and OUT.md (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = ts.devices.resolve_device(args.device)
    d_hidden = args.d_hidden or max(1, round(args.features * 768 / 16384))
    args.width = args.width or max(1, args.features // 4)
    keep = args.keep_draws == "on" or (args.keep_draws == "auto" and device.type == "cpu")
    if keep and device.type == "cuda" and args.capture == "auto":
        raise SystemExit("--keep-draws on needs --capture off on CUDA (a captured step draws inside the graph)")
    if args.world != "toysuper":
        args.capture = "off"  # SAELens's sampler has data-dependent shapes

    start = time.perf_counter()
    world = build_world(args.world, args.features, d_hidden, device)
    build_s = time.perf_counter() - start
    l0s = args.l0s or scaled_l0s(world, args.width)
    if len(l0s) != 2:
        raise SystemExit(f"--l0s takes two L0s (matched to the published 20 and 25 by rank), got {l0s}")
    steps = max(1, args.samples // args.batch_size)
    header = (f"SynthSAEBench table: {args.world} world of {world.n_features} features in {world.d_hidden} dims "
              f"(built in {build_s:.0f} s), width {args.width}, L0s {l0s}, seeds {args.seeds}, "
              f"{steps * args.batch_size:,} samples ({steps:,} steps of {args.batch_size}), lr {args.lr}, "
              f"graded on {args.eval_samples:,} samples; {device.type} ({torch.get_num_threads()} threads), "
              f"{args.precision}")
    print(header, flush=True)
    streams = Streams(world, [s for _ in l0s for s in args.seeds], keep=keep)
    eval_source = Streams(world, [0] * (len(l0s) * len(args.seeds)))
    rows, passes = [], []
    for name in args.recipes:
        result = run_recipe(name, world, streams, eval_source, l0s, args.seeds, args)
        rows.append(result)
        passes.append({"recipe": name, "instances": len(result), **result.iloc[0][["train_s", "draw_s", "eval_s"]]})
        print(f"  {name}: trained in {result['train_s'].iloc[0]:.0f} s (drawing {result['draw_s'].iloc[0]:.0f} s), "
              f"graded in {result['eval_s'].iloc[0]:.0f} s", flush=True)
    rows = pd.concat(rows, ignore_index=True)
    summary = table(rows, l0s)
    passes = pd.DataFrame(passes)
    text = markdown(summary, passes, header + f"; {time.perf_counter() - start:.0f} s in all")
    print(text)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"synthsaebench_{world.n_features}")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out.with_suffix(".csv"), index=False)
    out.with_suffix(".md").write_text(text)
    return summary


if __name__ == "__main__":
    main()
