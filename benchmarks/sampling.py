"""The feature draw, old against new, in one process, back to back.

Cases (the draws that sit on the training benchmarks' critical path, and the big ones):
    peer    the peer task's data: DictionarySource, 1024 random directions in 128 dims,
            p = 8/1024, U[0, 1] magnitudes, batch 1024, sample_hidden
    peer64  the same at 64 instances (one SAE sweep's data)
    toy     1, 64 and 4,096 toy-model instances, n = 20, S = 0.9, batch 1024 (256 at 4,096), sample()
    zipf    4096 x 16,384 features, Zipf(1.0) at L0 = 30: the sparse form (sample_sparse; an
            old version's sample_active) and the dense output (sample)
    world   a SynthSAEBench world (toysuper.worlds.synthsaebench), sample_hidden, against
            SAELens's own SyntheticModel.sample of the same configuration when SAELens is installed

Timings on a shared machine drift, so the figure to quote is a ratio: each round times the old
call and then the new one, and the ratio is the median over rounds of old / new.

    python benchmarks/sampling.py [--compare-with REV] [--threads 1] [--rounds 30] [--device cpu]
                                  [--world-features 4096] [--world-batch 1024]

--compare-with REV imports the toysuper of git revision REV (default: main) as the "old" side.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import toysuper as ts  # noqa: E402


def old_toysuper(revision: str):
    """The toysuper package of a git revision, imported as `toysuper_old` (None if it cannot be)."""
    folder = Path(tempfile.mkdtemp(prefix="toysuper_old_"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "toysuper"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        print(f"(no old side: cannot read toysuper at {revision!r}: {error})")
        return None
    (folder / "toysuper").rename(folder / "toysuper_old")
    sys.path.insert(0, str(folder))
    return importlib.import_module("toysuper_old")


def draws(lib, device: torch.device) -> dict:
    """The benchmark's calls against one version of the library (absent where that version lacks them), each
    instance on its own stream (`instance_generators`, what training uses: a list of torch.Generators in
    versions before counter-based streams)."""
    def streams(n):
        return lib.instance_generators(0, device, n_instances=n)

    zipf_law = importlib.import_module(f"{lib.__name__}.truth.frequencies").Zipf
    peer = lib.DictionarySource(lib.random_directions(1024, 128, device=device)[0],
                                lib.FeatureDistribution(1024, 8 / 1024, device=device))
    peer_64 = lib.DictionarySource(lib.random_directions(1024, 128, 64, device=device),
                                   lib.FeatureDistribution(1024, 8 / 1024, n_instances=64, device=device))
    toys = {n: lib.FeatureDistribution.sparsity_sweep(20, [0.9] * n, device=device) for n in (1, 64, 4096)}
    zipf = lib.FeatureDistribution(16384, zipf_law(1.0, 30), device=device)
    sparse = getattr(zipf, "sample_sparse", None) or getattr(zipf, "sample_active")
    one, many, most = streams(1), streams(64), streams(4096)
    return {
        "peer: sample_hidden(1024)": lambda: peer.sample_hidden(1024, one),
        "peer: 64 instances, sample_hidden(1024)": lambda: peer_64.sample_hidden(1024, many),
        "toy: 1 x 20 features, sample(1024)": lambda: toys[1].sample(1024, one),
        "toy: 64 x 20 features, sample(1024)": lambda: toys[64].sample(1024, many),
        "toy: 4096 x 20 features, sample(256)": lambda: toys[4096].sample(256, most),
        "zipf: 16384 features, sparse form (4096)": lambda: sparse(4096, one),
        "zipf: 16384 features, dense sample(4096)": lambda: zipf.sample(4096, one),
    }


def saelens_world(n_features: int, d_hidden: int, device: torch.device):
    """SAELens's SynthSAEBench configuration at this size (no orthogonalisation: it does not change the
    draw's cost), or None without SAELens."""
    try:
        from sae_lens.synthetic import SyntheticModel, SyntheticModelConfig
        from sae_lens.synthetic.firing_magnitudes import FoldedNormalMagnitudeConfig, LinearMagnitudeConfig
        from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig
        from sae_lens.synthetic.hierarchy import HierarchyConfig
        from sae_lens.synthetic.synthetic_model import LowRankCorrelationConfig
    except ImportError:
        return None
    config = SyntheticModelConfig(
        num_features=n_features, hidden_dim=d_hidden,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-4),
        hierarchy=HierarchyConfig(total_root_nodes=max(1, round(128 * n_features / 16384)), branching_factor=4,
                                  max_depth=3, mutually_exclusive_portion=1.0, compensate_probabilities=True,
                                  scale_children_by_parent=True),
        correlation=LowRankCorrelationConfig(rank=25, correlation_scale=0.1),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0), bias=0.5, seed=42)
    return SyntheticModel(config, device=str(device))


def rounds(first, second, n_rounds: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Seconds of `first` then `second`, each round one call of each (after two warm-up calls each)."""
    for f in (first, second):
        f(), f()
    a, b = [], []
    for _ in range(n_rounds):
        for f, times in ((first, a), (second, b)):
            start = time.perf_counter()
            f()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return a, b


def report(name: str, old: list[float], new: list[float], old_label: str = "old") -> dict:
    ratio = statistics.median(o / n for o, n in zip(old, new))
    print(f"{name:44s} {old_label} {statistics.median(old) * 1e3:9.3f} ms   new {statistics.median(new) * 1e3:9.3f} ms"
          f"   {old_label}/new {ratio:6.2f}x   (fastest {min(old) * 1e3:.3f} / {min(new) * 1e3:.3f} ms)")
    return {"draw": name, "old_ms": statistics.median(old) * 1e3, "new_ms": statistics.median(new) * 1e3,
            "ratio": ratio}


def timings(device: str = "cpu", n_rounds: int = 10) -> dict:
    """Median milliseconds of this version's draws (for benchmarks/run.py)."""
    device = torch.device(device)
    result = {}
    for name, call in draws(ts, device).items():
        result[name] = statistics.median(rounds(call, call, n_rounds, device)[1]) * 1e3
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-with", default="main", help="git revision of the old side ('' for none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--world-features", type=int, default=4096)
    parser.add_argument("--world-batch", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{args.threads} thread(s), {device}; median of {args.rounds} rounds, each old then new")
    new = draws(ts, device)
    old = old_toysuper(args.compare_with) if args.compare_with else None
    if old is not None:
        for name, call in draws(old, device).items():
            report(name, *rounds(call, new[name], args.rounds, device))
    n, d = args.world_features, round(768 * args.world_features / 16384)
    world = ts.worlds.synthsaebench(n, d, device=device, orthogonalize_steps=1)
    world_streams = ts.instance_generators(0, device, n_instances=1)
    ours = lambda: world.sample_hidden(args.world_batch, world_streams)  # noqa: E731
    reference = saelens_world(n, d, device)
    name = f"world: {n} features in {d} dims, sample_hidden({args.world_batch})"
    world_rounds = max(5, args.rounds // 4)
    if reference is None:
        report(name, *rounds(ours, ours, world_rounds, device), old_label="same")
    else:
        report(name, *rounds(lambda: reference.sample(args.world_batch), ours, world_rounds, device),
               old_label="SAELens")


if __name__ == "__main__":
    main()
