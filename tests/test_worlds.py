"""The SynthSAEBench world from toysuper's own pieces, checked against the benchmark's figures and SAELens."""

import math

import pytest
import torch

from toysuper import FeatureDistribution, worlds
from toysuper.truth.correlation import LowRankCorrelation
from toysuper.truth.dictionaries import max_abs_cos, orthogonalize
from toysuper.truth.frequencies import Zipf
from toysuper.truth.hierarchy import Hierarchy
from device import DEVICE

Z = 5.0


def _z_scores(fires: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    n = fires.shape[0]
    p = p.double()
    return (fires.double().mean(0) - p) / (p * (1 - p) / n).sqrt().clamp_min(1e-12)


def test_zipf_by_p_max_and_p_min():
    p = Zipf(0.5, p_max=0.4, p_min=5e-4).resolve(2, 1000, "cpu")
    assert p.shape == (2, 1000) and p[0, 0].item() == pytest.approx(0.4) and p[0, -1].item() == pytest.approx(5e-4)
    w = torch.arange(1, 1001, dtype=torch.float64) ** -0.5
    spread = (p[0].double() - 5e-4) / (0.4 - 5e-4)
    assert torch.allclose(spread, (w - w[-1]) / (w[0] - w[-1]), atol=1e-6)  # r^-α mapped linearly
    for kwargs, name in [(dict(p_max=0.4), "p_min"), (dict(p_max=0.1, p_min=0.2), "p_min"),
                         (dict(p_max=1.5, p_min=0.1), "p_max"), (dict(l0=3, p_max=0.4, p_min=0.1), "l0")]:
        with pytest.raises(ValueError, match=name):
            Zipf(0.5, **kwargs)
    with pytest.raises(ValueError, match="exponent"):
        Zipf(0.0, p_max=0.4, p_min=0.1)
    assert Zipf(1.0).resolve(1, 100, "cpu").sum().item() == pytest.approx(30.0, rel=1e-5)  # l0 = 30 by default


def test_tree_hierarchy_is_breadth_first_and_stops_at_the_limit():
    tree = Hierarchy.tree(2, 3, 2)
    assert dict(tree.edges) == {0: (2, 3, 4), 1: (5, 6, 7), 2: (8, 9, 10), 3: (11, 12, 13), 4: (14, 15, 16),
                                5: (17, 18, 19), 6: (20, 21, 22), 7: (23, 24, 25)}
    full = Hierarchy.tree(128, 4, 3)
    assert len(full.edges) == 128 * (1 + 4 + 16) and len(full.children) == 128 * (4 + 16 + 64)
    cut = Hierarchy.tree(128, 4, 3, limit=4096)
    assert max(cut.children) == 4095 and cut.levels()[0] == list(range(128, 640))
    for kwargs, name in [(dict(n_roots=0), "n_roots"), (dict(branching=0), "branching"), (dict(depth=0), "depth")]:
        args = {"n_roots": 2, "branching": 2, "depth": 1, **kwargs}
        with pytest.raises(ValueError, match=name):
            Hierarchy.tree(**args)
    with pytest.raises(ValueError, match="limit"):
        Hierarchy.tree(4, 2, 1, limit=4)


@pytest.mark.parametrize("base", [
    [0.3, 0.05, 0.04, 0.03, 0.02],  # children fit inside the parent
    [0.05, 0.04, 0.04, 0.03, 0.03],  # they do not: SAELens's compensation saturates at 1
])
def test_saelens_rates_are_the_uniform_winner_rule(base):
    """π_c = a_c E[1/(1+K_c)]: SAELens keeps one raw-active child uniformly at random; simulate exactly that."""
    tree = Hierarchy({0: [1, 2, 3, 4]})
    base = torch.tensor(base, dtype=torch.float64)
    live = torch.tensor([1.0, 0.9, 1.0, 0.8, 1.0], dtype=torch.float64)
    rates, child_prob = worlds.saelens_rates(tree, base, live)
    raw = (base / base[0] * (1 + (base[1:].sum() - base) / base[0])).clamp(max=1) * live
    assert torch.allclose(rates[1:], raw[1:]) and rates[0] == base[0]
    n = 400_000
    generator = torch.Generator(DEVICE).manual_seed(0)
    active = torch.rand(n, 4, generator=generator, dtype=torch.float64) < rates[1:]
    score = torch.rand(n, 4, generator=generator).masked_fill(~active, -1.0)  # the winner: highest score
    kept = torch.zeros(n, 4).scatter_(1, score.argmax(1, keepdim=True), 1.0).bool() & active
    assert (_z_scores(kept, child_prob[1:]).abs() < Z).all()
    assert child_prob[1:].sum() <= 1 + 1e-12


def test_the_16k_world_has_the_published_figures():
    """SynthSAEBench-16k: mean L0 ≈ 34, ≈ 25 over the 4,096 most frequent features (exact rates here)."""
    dist = worlds.synthsaebench_distribution(device=DEVICE)
    assert dist.n_features == 16384
    assert dist.expected_l0().item() == pytest.approx(34.49, abs=0.01)
    assert dist.firing_prob[0, :4096].sum().item() == pytest.approx(25.17, abs=0.01)
    assert len(dist.hierarchy.edges) == 2688 and len(dist.hierarchy.children) == 10752
    assert dist.hierarchy.exclusive_children and dist.hierarchy.scale_children_by_parent
    mean = dist.magnitude.params["mean"][0]
    assert mean[0].item() == pytest.approx(5.0) and mean[-1].item() == pytest.approx(4.0)
    std = dist.magnitude.params["std"][0]
    assert std.mean().item() == pytest.approx(0.5 * math.sqrt(2 / math.pi) * math.exp(-0.5) + 0.5 * (1 - 2 * 0.1587),
                                              abs=0.01)  # E|N(0.5, 0.5²)| = 0.6
    assert dist.correlation.rank == 25 and dist.correlation.scale == 0.1


def test_a_small_world_draws_its_rates_exclusion_and_scaled_children():
    dist = worlds.synthsaebench_distribution(1024, device=DEVICE)
    x = dist.sample(20_000, torch.Generator(DEVICE).manual_seed(0))[:, 0]
    fires = x > 0
    assert (_z_scores(fires, dist.firing_prob[0]).abs() < Z).all()
    parent = dist.parent
    child = parent >= 0
    assert not (fires[:, child] & ~fires[:, parent[child]]).any()  # a child only inside its parent
    for p, kids in dist.hierarchy.edges[:50]:
        assert fires[:, list(kids)].sum(1).max() <= 1  # mutually exclusive children
    # a child's value is its own draw times its parent's value over the parent's mean: the ratio of a
    # child's mean to its own law's mean is E[parent value | parent fires] / mean = 1 on average
    mean = dist.magnitude.mean()[0]
    ratio = (x[:, child].sum(0) / fires[:, child].sum(0).clamp_min(1)) / mean[child]
    assert ratio[fires[:, child].sum(0) > 200].mean().item() == pytest.approx(1.0, abs=0.02)
    root_values = x[:, 0][fires[:, 0]]
    assert root_values.mean().item() == pytest.approx(mean[0].item(), rel=0.01)


def test_the_copula_correlates_firing_as_its_factor_says_and_keeps_every_rate():
    from scipy.stats import multivariate_normal

    copula = LowRankCorrelation(rank=2, scale=0.6, seed=3)
    loadings, own = copula.factor(8)
    assert loadings.shape == (8, 2) and torch.allclose(loadings.pow(2).sum(1) + own.pow(2), torch.ones(8))
    p = torch.tensor([0.3, 0.2, 0.1, 0.05, 0.3, 0.2, 0.1, 0.05])
    dist = FeatureDistribution(8, p, correlation=copula, device=DEVICE)
    n = 200_000
    fires = dist.sample(n, torch.Generator(DEVICE).manual_seed(1))[:, 0] > 0
    assert (_z_scores(fires, p).abs() < Z).all()
    threshold = torch.special.ndtri(1 - p.double())
    for i, j in [(0, 1), (0, 4), (2, 3), (1, 6)]:
        rho = float(loadings[i] @ loadings[j])
        both = 1 - multivariate_normal.cdf([threshold[i], 1e9], cov=[[1, rho], [rho, 1]]) \
            - multivariate_normal.cdf([1e9, threshold[j]], cov=[[1, rho], [rho, 1]]) \
            + multivariate_normal.cdf([threshold[i], threshold[j]], cov=[[1, rho], [rho, 1]])
        measured = (fires[:, i] & fires[:, j]).double().mean().item()
        assert abs(measured - both) < Z * math.sqrt(both * (1 - both) / n), (i, j, rho, measured, both)
    with pytest.raises(ValueError, match="rank"):
        LowRankCorrelation(rank=0)
    with pytest.raises(ValueError, match="scale"):
        LowRankCorrelation(scale=-0.1)


def test_orthogonalize_minimises_saelens_objective():
    synthetic = pytest.importorskip("sae_lens.synthetic.feature_dictionary")
    start = torch.randn(300, 24, generator=torch.Generator(DEVICE).manual_seed(0))
    ours = orthogonalize(start, steps=20, lr=3e-3)
    theirs = synthetic.orthogonalize_embeddings(start, num_steps=20, lr=3e-3, chunk_size=64)
    assert torch.allclose(ours, theirs, atol=1e-5)
    unit = start / start.norm(dim=1, keepdim=True)
    overlap = (ours @ ours.T).fill_diagonal_(0).pow(2).sum()
    assert overlap < 0.95 * (unit @ unit.T).fill_diagonal_(0).pow(2).sum()  # the objective went down
    assert torch.allclose(ours.norm(dim=1), torch.ones(300), atol=1e-6)
    assert max_abs_cos(ours) < max_abs_cos(unit)


def test_a_world_is_a_source_with_its_bias_and_one_stream_per_instance():
    source = worlds.synthsaebench(512, 24, n_instances=2, orthogonalize_steps=5, device=DEVICE)
    assert (source.n_instances, source.n_features, source.d_hidden) == (2, 512, 24)
    assert torch.allclose(source.bias.norm(dim=-1), torch.full((2,), 0.5))
    assert torch.equal(source.directions[0], source.directions[1])  # the same world twice
    batch = source.sample(256, torch.Generator(DEVICE).manual_seed(0))
    signal = torch.einsum("bif,ifd->bid", batch.features, source.directions)
    assert torch.allclose(batch.hidden - source.bias, signal, atol=1e-4)
    assert not torch.equal(batch.features[:, 0], batch.features[:, 1])  # each instance its own data
    with pytest.raises(ValueError, match="seed"):
        worlds.synthsaebench(64, 8, seed=-1, device=DEVICE)
    with pytest.raises(ValueError, match="magnitude_mean"):
        worlds.synthsaebench_distribution(64, magnitude_mean=(5.0, -1.0), device=DEVICE)


def test_without_the_copula_the_world_is_saelens_world_feature_by_feature():
    """SAELens's own generator and ours, correlation off (the one documented difference), 256 features:
    every feature's rate agrees within sampling error."""
    synthetic = pytest.importorskip("sae_lens.synthetic")
    from sae_lens.synthetic.firing_magnitudes import FoldedNormalMagnitudeConfig, LinearMagnitudeConfig
    from sae_lens.synthetic.firing_probabilities import ZipfianFiringProbabilityConfig
    from sae_lens.synthetic.hierarchy import HierarchyConfig

    n = 256
    config = synthetic.SyntheticModelConfig(
        num_features=n, hidden_dim=8, orthogonalization=None, correlation=None, bias=0.5, seed=42,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-4),
        hierarchy=HierarchyConfig(total_root_nodes=2, branching_factor=4, max_depth=3, mutually_exclusive_portion=1.0,
                                  compensate_probabilities=True, scale_children_by_parent=True),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0))
    torch.manual_seed(0)
    theirs = synthetic.SyntheticModel(config).activation_generator.sample(60_000)
    ours = worlds.synthsaebench_distribution(n, correlation_scale=0.0, device=DEVICE)
    assert (_z_scores(theirs > 0, ours.firing_prob[0]).abs() < Z).all()
    drawn = ours.sample(60_000, torch.Generator(DEVICE).manual_seed(0))[:, 0]
    for values in (theirs, drawn):  # magnitudes, children scaled by their parents: the same means
        assert (values.sum(0) / (values > 0).sum(0).clamp_min(1))[:8].tolist() == pytest.approx(
            (theirs.sum(0) / (theirs > 0).sum(0).clamp_min(1))[:8].tolist(), rel=0.02)


def test_a_config_names_a_world(monkeypatch):
    from toysuper.sweep import assemble
    from toysuper.sweep import config as config_io

    monkeypatch.setitem(worlds.WORLDS, "tiny", (256, 16))  # the 4k world takes seconds to orthogonalise
    user = {"seed": [0, 1], "features": {"n_features": 256}, "source": {"kind": "dictionary", "d_hidden": 16,
                                                                        "world": "tiny"}}
    points = config_io.expand(config_io.resolve(user))
    for point in points:
        assemble.check_point(point)
    source = assemble.dictionary_source(points, DEVICE)
    assert (source.n_instances, source.n_features, source.d_hidden) == (2, 256, 16)
    assert source.dist.hierarchy is not None and source.bias is not None
    for change, message in [({"world": "nowhere"}, "source.world"), ({"d_hidden": 8}, "source.d_hidden = 16"),
                            ({"kind": "toy_model"}, "source.kind")]:
        with pytest.raises(ValueError, match=message):  # a value by itself (world) is refused by resolve already
            assemble.check_point(config_io.expand(config_io.resolve({**user, "source": {**user["source"],
                                                                                        **change}}))[0])


def test_the_draw_at_the_fired_entries_alone_equals_the_dense_one():
    """Eagerly on a CPU, magnitudes (and the hidden sum) are computed at the firing entries alone; compiled,
    as on a GPU, at every entry: the same features, the same activations up to the order of summation."""
    source = worlds.synthsaebench(512, 24, n_instances=2, orthogonalize_steps=5, device=DEVICE)
    numbers = source.numbers(128, torch.Generator(DEVICE).manual_seed(0))
    hidden, drawn = source.transform(numbers)
    dense_hidden, dense = torch.compile(source.transform, fullgraph=True, dynamic=False, backend="aot_eager")(numbers)
    assert torch.equal(drawn.slots, dense.slots) and drawn.slots.count_nonzero() > 128
    assert torch.allclose(hidden, dense_hidden, atol=1e-5)
