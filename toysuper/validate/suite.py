"""The validation suite: ground-truth tasks, each a world with a known answer and a question it answers.

A size (`smoke`, `cpu`, `gpu`) changes only how many samples train and grade the SAE (and SynthSAEBench's
world). The seeds are fixed: the world's here, the SAE's 0, its data stream's 1 (docs/suite.md). Change a
task, a size or a seed and SUITE_VERSION must change with it: the shipped baselines are keyed by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..grade.diagnostics import firing_probabilities
from ..sources import DictionarySource, ToyModelSource
from ..toy.model import ToyModel
from ..toy.train import train_toy_model
from .. import worlds
from ..truth.correlation import LowRankCorrelation
from ..truth.dictionaries import random_directions
from ..truth.distribution import FeatureDistribution
from ..truth.frequencies import Zipf
from ..truth.groups import CorrelatedGroups
from ..truth.hierarchy import Hierarchy
from ..truth.magnitudes import Constant

SUITE_VERSION = 1


@dataclass(frozen=True)
class Size:
    samples: int  # training samples per SAE (SynthSAEBench: `synth_samples`)
    batch_size: int
    n_eval: int  # held-out samples that grade the trained SAE
    snapshot_eval: int  # held-out samples that grade each snapshot
    synth_world: tuple[int, int, int]  # SynthSAEBench's (n_features, d_hidden, SAE width)
    synth_samples: int


SIZES = {
    "smoke": Size(200_000, 256, 4_096, 1_024, (1_024, 48, 256), 200_000),
    "cpu": Size(600_000, 256, 20_000, 2_048, (4_096, 192, 1_024), 600_000),
    "gpu": Size(4_000_000, 1_024, 100_000, 8_192, (16_384, 768, 4_096), 200_000_000),
}
SNAPSHOTS = 5  # snapshots of recovery over training per row


@dataclass(frozen=True)
class Setup:
    """What one task gives a row to train on: the source, the SAE's width, the L0 to match, how long."""

    source: object
    d_sae: int
    l0: float
    samples: int
    batch_size: int


@dataclass(frozen=True)
class Task:
    name: str
    question: str
    build: Callable[[Size, object], Setup]


def _planted(n: int, d: int, l0: float, width: float = 1.0, seed: int = 0, firing=None, snr=None,
             **dist) -> Callable:
    """n random unit directions in d dimensions, each firing with probability l0 / n (or `firing`)."""
    def build(size: Size, device) -> Setup:
        distribution = FeatureDistribution(n, l0 / n if firing is None else firing, device=device, **dist)
        source = DictionarySource(random_directions(n, d, seed=seed, device=device)[0], distribution, snr=snr)
        return Setup(source, round(width * n), l0, size.samples, size.batch_size)
    return build


def _absorption(size: Size, device) -> Setup:
    """64 parents with 3 exclusive children each (256 features) in 64 dimensions, Zipf(1) rates."""
    hierarchy = Hierarchy.regular(n_parents=64, n_children=3, exclusive_children=True, child_prob=0.3)
    dist = FeatureDistribution(256, Zipf(1.0, 6.0), hierarchy=hierarchy, device=device)
    source = DictionarySource(random_directions(256, 64, seed=3, device=device)[0], dist)
    return Setup(source, 256, float(round(dist.expected_l0().mean().item())), size.samples, size.batch_size)


def _correlated(size: Size, device) -> Setup:
    """256 features in 64 dimensions: a rank-16 Gaussian copula and 32 groups of 4 that co-fire (ρ = 0.5)."""
    groups = CorrelatedGroups([range(4 * g, 4 * g + 4) for g in range(32)], correlation=0.5)
    dist = FeatureDistribution(256, 8 / 256, correlation=LowRankCorrelation(16, 0.3, seed=4),
                               correlated_groups=groups, device=device)
    source = DictionarySource(random_directions(256, 64, seed=4, device=device)[0], dist)
    return Setup(source, 256, float(round(dist.expected_l0().mean().item())), size.samples, size.batch_size)


def _toy(feature_prob: float) -> Callable:
    """A toy model of superposition (ReLU output, 80 features in 20 dimensions, importance 0.9^i) trained on
    features that fire with `feature_prob`; the SAE reads its hidden layer."""
    def build(size: Size, device) -> Setup:
        dist = FeatureDistribution(80, feature_prob, importance=0.9 ** torch.arange(80.0),
                                   device=device)
        model = ToyModel(80, 20, seed=5, device=device)
        train_toy_model(model, dist, steps=3_000, batch_size=1_024, lr=3e-3, seed=5, quiet=True)
        return Setup(ToyModelSource(model, dist), 80, float(round(80 * feature_prob)), size.samples, size.batch_size)
    return build


def _synthsaebench(size: Size, device) -> Setup:
    """SynthSAEBench's world; the published L0 25 at width 4,096 of the 16k world, scaled elsewhere by the
    true L0 of the `width` most frequent features over the 16k world's 25.2 (benchmarks/synthsaebench.py)."""
    n, d, width = size.synth_world
    source = worlds.synthsaebench(n, d, seed=42, device=device)
    top = firing_probabilities(source)[0].float().sort(descending=True).values[:width].sum().item()
    l0 = 25.0 if n == worlds.N_FEATURES_16K else max(1.0, float(round(25 * top / 25.2)))
    return Setup(source, width, l0, size.synth_samples, 1_024 if n == worlds.N_FEATURES_16K else size.batch_size)


TASKS = {task.name: task for task in (
    Task("standard", "Does it recover 512 features packed 8 per dimension, L0 8, at width 1?",
         _planted(512, 64, 8)),
    Task("packed", "Does it hold up at 16 features per dimension (L0 4)?", _planted(512, 32, 4, seed=1)),
    Task("high-l0", "Does it hold up when 16 features fire per sample (256 in 64 dimensions)?",
         _planted(256, 64, 16, seed=2)),
    Task("zipf-wide", "With Zipf(1) frequencies and a dictionary twice the truth, does it find the rare "
         "features without splitting the common ones?", _planted(256, 64, 8, width=2, seed=2, firing=Zipf(1.0, 8.0))),
    Task("constant", "When every firing feature has magnitude 1 (no magnitude cue), does it still recover them?",
         _planted(256, 64, 8, seed=2, magnitude=Constant())),
    Task("absorption", "Parents with exclusive children: does a child's latent absorb its parent "
         "(absorption, parent recall)?", _absorption),
    Task("correlated", "Under correlated firing (low-rank copula, co-firing groups), does it hedge or merge "
         "features?", _correlated),
    Task("noisy", "With isotropic noise at SNR 5, does it still recover the standard task's features?",
         _planted(512, 64, 8, seed=0, snr=5.0)),
    Task("toy-sparse", "A toy model's hidden layer (80 features in 20 dims, each firing 2.5%): does it find "
         "the model's features?", _toy(0.025)),
    Task("toy-dense", "The same toy model's kind at 10% firing, where superposition is tighter?", _toy(0.1)),
    Task("synthsaebench", "SynthSAEBench (hierarchy, copula, Zipf, noise-free): MCC, F1 and explained variance "
         "at its published L0", _synthsaebench),
)}


def listing() -> str:
    """The tasks and what each asks, as text (`toysuper validate --list`)."""
    lines = [f"toysuper validation suite v{SUITE_VERSION}; sizes: " + ", ".join(
        f"{name} ({size.samples:,} samples per SAE)" for name, size in SIZES.items())]
    lines += [f"  {name:<14} {task.question}" for name, task in TASKS.items()]
    return "\n".join(lines)
