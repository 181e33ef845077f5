import math

import pytest
import torch

from toysuper import FeatureDistribution
from toysuper.truth.distribution import ActiveFeatures
from toysuper.truth.frequencies import Zipf
from toysuper.truth.groups import CorrelatedGroups, ExclusiveGroups
from toysuper.truth.hierarchy import Hierarchy
from toysuper.truth.magnitudes import Constant, Exponential, FoldedNormal, Uniform
from toysuper.truth.sparse_sampling import FLOAT32_GAPS_FROM, BernoulliColumns, split_index


def test_sample_shape_and_firing_rate_per_instance():
    dist = FeatureDistribution.sparsity_sweep(50, [0.0, 0.5, 0.9], device="cpu")
    x = dist.sample(20_000, torch.Generator().manual_seed(0))
    assert x.shape == (20_000, 3, 50)
    rate = (x > 0).float().mean((0, 2))
    assert torch.allclose(rate, torch.tensor([1.0, 0.5, 0.1]), atol=0.01)
    assert x.min() >= 0 and x.max() <= 1
    # magnitudes of firing features are U[0, 1]: mean 1/2
    assert abs(x[:, 0].mean().item() - 0.5) < 0.01


def test_per_feature_probabilities_and_importance_broadcast():
    p = torch.tensor([0.0, 0.25, 1.0])
    dist = FeatureDistribution(3, p, n_instances=2, importance=[1.0, 0.5, 0.25], device="cpu")
    x = dist.sample(10_000, torch.Generator().manual_seed(1))
    rate = (x > 0).float().mean(0)
    assert torch.allclose(rate, p.expand(2, 3), atol=0.02)
    assert dist.importance.shape == (2, 3) and dist.importance[1, 2] == 0.25
    assert torch.allclose(dist.expected_l0(), torch.tensor([1.25, 1.25]))


def test_same_seed_same_samples():
    dist = FeatureDistribution(10, 0.3, n_instances=2, device="cpu")
    a = dist.sample(64, torch.Generator().manual_seed(7))
    b = dist.sample(64, torch.Generator().manual_seed(7))
    c = dist.sample(64, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs, name", [
    ({"firing_prob": -0.1}, "firing_prob"),
    ({"firing_prob": 1.5}, "firing_prob"),
    ({"sparsity": [0.5, float("nan")]}, "sparsity"),
    ({"sparsity": -1.0}, "sparsity"),
    ({"firing_prob": [0.1, 0.2]}, "firing_prob"),  # wrong shape for 4 features
    ({"firing_prob": 0.1, "importance": -1.0}, "importance"),
])
def test_bad_probabilities_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FeatureDistribution(4, device="cpu", **kwargs)


def test_exactly_one_of_firing_prob_and_sparsity():
    with pytest.raises(ValueError, match="exactly one"):
        FeatureDistribution(4, 0.1, sparsity=0.9, device="cpu")
    with pytest.raises(ValueError, match="n_features"):
        FeatureDistribution(0, 0.1, device="cpu")


# ---- frequencies, magnitudes, joint structure, sparse sampling --------------------------------------------------

Z = 5.0  # statistical tolerance: 5 standard errors (a fixed seed makes each test deterministic anyway)


def _rates_match(fires: torch.Tensor, p: torch.Tensor) -> bool:
    """Empirical firing rates of (batch, ...) booleans against probabilities p (...), within Z standard errors."""
    n = fires.shape[0]
    rate = fires.double().mean(0)
    p = p.double()
    return bool(((rate - p).abs() <= Z * (p * (1 - p) / n).sqrt() + 1e-12).all())


def _phi(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two boolean vectors."""
    return torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1].item()


def test_zipf_is_a_power_law_with_l0_as_the_knob():
    dist = FeatureDistribution(1000, Zipf(exponent=1.2, l0=[5.0, 20.0]), n_instances=2, device="cpu")
    p = dist.firing_prob
    assert torch.allclose(dist.expected_l0(), torch.tensor([5.0, 20.0]), rtol=1e-5)
    # unsaturated rates fall as rank^-1.2: p_9 / p_99 = (100 / 10)^1.2
    assert p[0, 9] / p[0, 99] == pytest.approx(10 ** 1.2, rel=1e-4)
    assert (p[:, :-1] >= p[:, 1:]).all()
    # at L0 = 30 over 16,384 features with exponent 1 the head saturates at 1 and the sum still holds
    saturated = Zipf(1.0, 30).resolve(1, 16384, "cpu")
    assert saturated[0, 0] == 1.0 and saturated.sum().item() == pytest.approx(30.0, rel=1e-5)
    x = dist.sample(20_000, torch.Generator().manual_seed(0))
    assert _rates_match(x > 0, p)
    assert Zipf(0.0, 4).resolve(1, 8, "cpu").tolist() == [[0.5] * 8]


@pytest.mark.parametrize("law, message", [
    (Zipf(1.0, 0.0), "l0"), (Zipf(1.0, 11.0), "l0"), (Zipf(1.0, float("nan")), "l0"),
])
def test_zipf_bad_l0_names_it(law, message):
    with pytest.raises(ValueError, match=message):
        FeatureDistribution(10, law, device="cpu")


def test_zipf_bad_exponent_names_it():
    with pytest.raises(ValueError, match="exponent"):
        Zipf(-1.0, 3)


def test_sparse_sampler_keeps_exact_rates_including_dense_columns_and_certainties():
    p = torch.tensor([[0.0, 1.0, 0.9, 0.3, 0.01, 0.002], [0.5, 0.0, 0.05, 0.6, 1e-4, 1.0]])
    dist = FeatureDistribution(6, p, n_instances=2, sampling="sparse", device="cpu")
    x = dist.sample(100_000, torch.Generator().manual_seed(3))
    fires = x > 0
    assert _rates_match(fires, p)
    assert not fires[:, 0, 0].any() and not fires[:, 1, 1].any()  # p = 0 never fires
    assert fires[:, 0, 1].all() and fires[:, 1, 5].all()  # p = 1 always fires
    assert x.max() <= 1 and abs(x[fires].mean().item() - 0.5) < 0.01  # U[0, 1] magnitudes


def test_geometric_walk_stays_exact_when_columns_run_short():
    """With almost no spare gaps most columns go round again; hits stay unique and rates exact."""
    rates = torch.tensor([0.3, 0.02, 0.001, 0.45, 0.1])
    columns = BernoulliColumns(rates)
    columns.spare_sigmas, columns.spare_gaps = 0.0, 0
    batch = 50_000
    unit, sample = columns.hits(batch, torch.Generator().manual_seed(0))
    keys = unit * batch + sample
    assert len(torch.unique(keys)) == len(keys)
    assert sample.min() >= 0 and sample.max() < batch
    fires = torch.zeros(batch, 5, dtype=torch.bool)
    fires[sample, unit] = True
    assert _rates_match(fires, rates)
    # gaps are geometric: the hits of one column are a Bernoulli process, so neighbours are independent
    col = fires[:, 0]
    assert abs(_phi(col[:-1], col[1:])) < Z / math.sqrt(batch)


@pytest.mark.parametrize("spare", [True, False])
def test_one_rate_walk_is_a_bernoulli_grid_sorted_by_sample(spare):
    """Columns sharing one rate are walked as one sequence; without spare gaps it goes round many times."""
    columns = BernoulliColumns(torch.full((7,), 0.03))
    assert columns._one_rate
    if not spare:
        columns.spare_sigmas, columns.spare_gaps = 0.0, 0
    batch = 40_000
    unit, sample = columns.hits(batch, torch.Generator().manual_seed(0))
    keys = sample * 7 + unit
    assert torch.equal(keys, torch.unique(keys))  # each (sample, unit) once, in sample-major order
    fires = torch.zeros(batch, 7, dtype=torch.bool)
    fires[sample, unit] = True
    assert _rates_match(fires, torch.full((7,), 0.03))
    flat = fires.flatten()  # consecutive cells of the walk are independent
    assert abs(_phi(flat[:-1], flat[1:])) < Z / math.sqrt(len(flat))


@pytest.mark.parametrize("rate", [0.05, FLOAT32_GAPS_FROM, 0.002])
def test_walked_gaps_are_geometric_in_float32_and_float64(rate):
    """Gaps between hits follow r (1 - r)^k, whether drawn from float32 uniforms (r >= 1/256) or float64."""
    columns = BernoulliColumns(torch.tensor([rate]))
    assert columns._gap_dtype == (torch.float32 if rate >= FLOAT32_GAPS_FROM else torch.float64)
    unit, sample = columns.hits(4_000_000, torch.Generator().manual_seed(1))
    gaps = sample.sort().values.diff() - 1  # misses between consecutive hits
    n_bins = int(3 / rate)  # the last bin holds the tail beyond 3 / r (5% of gaps)
    counts = torch.bincount(gaps.clamp(max=n_bins), minlength=n_bins + 1).double()
    k = torch.arange(n_bins + 1, dtype=torch.float64)
    expected = len(gaps) * rate * (1 - rate) ** k
    expected[-1] = len(gaps) * (1 - rate) ** n_bins
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < n_bins + 4 * math.sqrt(2 * n_bins), (chi2, n_bins)  # mean n_bins, sd sqrt(2 n_bins)


def test_split_index_is_integer_division():
    n = 1280
    flat = torch.tensor([0, 1, n - 1, n, n + 1, 7 * n, 7 * n - 1, 2 ** 50 - 1, 2 ** 50 - n, 123_456_789])
    for end in (2 ** 50, 2 ** 60):  # float64 arithmetic below 2^50, integer division above
        quotient, remainder = split_index(flat, n, end)
        assert torch.equal(quotient, flat // n) and torch.equal(remainder, flat % n)
    flat = torch.randint(0, 2 ** 50, (100_000,), generator=torch.Generator().manual_seed(0))
    for n in (3, 20, 1280, 16_384, 10 ** 9 + 7):
        quotient, remainder = split_index(flat, n, 2 ** 50)
        assert torch.equal(quotient, flat // n) and torch.equal(remainder, flat % n)


def test_sparse_sampling_draws_no_dense_uniforms(monkeypatch):
    """16,384 features at L0 = 30: no random draw anywhere near batch × n_features entries."""
    sizes = []
    real_rand = torch.rand

    def counting_rand(*args, **kwargs):
        out = real_rand(*args, **kwargs)
        sizes.append(out.numel())
        return out

    monkeypatch.setattr(torch, "rand", counting_rand)
    batch, n = 1024, 16384
    x = FeatureDistribution(n, Zipf(1.0, 30), device="cpu").sample(batch, torch.Generator().manual_seed(0))
    assert x.shape == (batch, 1, n)
    assert max(sizes) < batch * n / 20  # the walk draws ~ hits + a few per column, not 16.8 M
    assert (x > 0).sum(-1).float().mean().item() == pytest.approx(30, rel=0.05)


def test_dense_and_sparse_give_the_same_distribution_and_sample_active_the_same_numbers():
    p = torch.linspace(0.01, 0.2, 30)
    rates = {}
    for sampling in ("dense", "sparse"):
        dist = FeatureDistribution(30, p, sampling=sampling, device="cpu")
        x = dist.sample(40_000, torch.Generator().manual_seed(5))
        assert _rates_match(x[:, 0] > 0, p)
        rates[sampling] = (x > 0).float().mean(0)
        active = dist.sample_active(500, torch.Generator().manual_seed(6))
        assert isinstance(active, ActiveFeatures)
        assert torch.equal(active.to_dense(), dist.sample(500, torch.Generator().manual_seed(6)))
    with pytest.raises(ValueError, match="sampling"):
        FeatureDistribution(3, 0.1, sampling="fast", device="cpu")


@pytest.mark.parametrize("n_features, firing_prob, n_instances, batch, sparse", [
    (20, 0.1, 64, 1024, True),  # 1.3 M entries, one rate: walking 131 k hits is cheaper
    (20, 0.1, 1, 1024, False),  # 20 k entries: the walk's fixed cost outweighs it
    (1024, 0.15, 1, 1024, True),  # one rate: the walk wins up to about 25% firing
    (1024, 0.3, 1, 1024, False),
    (1024, 0.15 * torch.linspace(0.5, 1.5, 1024), 1, 1024, False),  # per-column rates: only up to about 8%
    (1024, 0.05 * torch.linspace(0.5, 1.5, 1024), 1, 1024, True),
])
def test_auto_sampling_takes_the_cheaper_way(n_features, firing_prob, n_instances, batch, sparse):
    """"auto" weighs one uniform per entry against walking the expected hits (benchmarks/sampling_crossover.py)."""
    dist = FeatureDistribution(n_features, firing_prob, n_instances=n_instances, device="cpu")
    assert dist.draws_sparse(batch) == sparse
    x = dist.sample(batch, torch.Generator().manual_seed(0))
    assert x.shape == (batch, n_instances, n_features)
    assert (x > 0).float().mean().item() == pytest.approx(float(dist.firing_prob.mean()), rel=0.1)


@pytest.mark.parametrize("sampling", ["dense", "sparse"])
def test_samples_are_stored_instance_major(sampling):
    """(batch, inst, n) with each instance's (batch, n) block contiguous, which batched models read faster."""
    dist = FeatureDistribution(20, 0.1, n_instances=4, sampling=sampling, device="cpu")
    x = dist.sample(300, torch.Generator().manual_seed(0))
    assert x.shape == (300, 4, 20) and x.transpose(0, 1).is_contiguous()
    active = dist.sample_active(300, torch.Generator().manual_seed(0))
    assert torch.equal(x, active.to_dense())
    assert torch.equal(x[active.sample, active.instance, active.feature], active.value)


@pytest.mark.parametrize("law", [Uniform(0.5, 2.0), Constant(3.0), Exponential(0.4), FoldedNormal(0.5, 1.0),
                                 FoldedNormal(-2.0, 0.3)])
@pytest.mark.parametrize("sampling", ["dense", "sparse"])
def test_magnitude_laws_match_their_moments(law, sampling):
    dist = FeatureDistribution(4, 0.3, n_instances=2, magnitude=law, sampling=sampling, device="cpu")
    x = dist.sample(40_000, torch.Generator().manual_seed(1))
    values = x[x > 0].double()
    mean, second = dist.magnitude.mean()[0, 0].item(), dist.magnitude.second_moment()[0, 0].item()
    se = math.sqrt(max(second - mean ** 2, 1e-12) / len(values))
    assert abs(values.mean().item() - mean) <= Z * se + 1e-6
    assert values.pow(2).mean().item() == pytest.approx(second, rel=0.03)
    assert _rates_match(x > 0, dist.firing_prob)


def test_magnitudes_per_feature():
    dist = FeatureDistribution(3, 0.5, magnitude=Constant([1.0, 2.0, 3.0]), sampling="sparse", device="cpu")
    x = dist.sample(2000, torch.Generator().manual_seed(0))[:, 0]
    for i, value in enumerate([1.0, 2.0, 3.0]):
        assert set(x[:, i].unique().tolist()) == {0.0, value}


@pytest.mark.parametrize("law, name", [
    (lambda: Uniform(-0.1, 1.0), "low"), (lambda: Uniform(1.0, 0.5), "high"), (lambda: Constant(0.0), "value"),
    (lambda: Exponential([1.0, -1.0, 1.0]), "mean"), (lambda: FoldedNormal(0.0, 0.0), "std"),
    (lambda: Uniform(0.0, [1.0, 2.0]), "high"), (lambda: Exponential(float("inf")), "mean"),
])
def test_bad_magnitudes_name_the_parameter(law, name):
    with pytest.raises(ValueError, match=name):
        FeatureDistribution(3, 0.5, magnitude=law(), device="cpu")


def test_magnitude_must_be_a_law():
    with pytest.raises(TypeError, match="magnitude"):
        FeatureDistribution(3, 0.5, magnitude="uniform", device="cpu")


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.8])
def test_correlated_groups_reach_the_stated_correlation_and_keep_rates(rho):
    groups = CorrelatedGroups([[0, 1, 2], [3, 4]], correlation=rho)
    p = torch.tensor([0.1, 0.1, 0.1, 0.02, 0.02, 0.1])
    dist = FeatureDistribution(6, p, correlated_groups=groups, device="cpu")
    fires = dist.sample(200_000, torch.Generator().manual_seed(2))[:, 0] > 0
    assert _rates_match(fires, p)
    for i, j in [(0, 1), (1, 2), (3, 4)]:
        assert _phi(fires[:, i], fires[:, j]) == pytest.approx(rho, abs=0.02)
    for i, j in [(0, 3), (2, 5), (4, 5)]:  # across groups and outside: independent
        assert abs(_phi(fires[:, i], fires[:, j])) < 0.02


def test_correlated_groups_with_unequal_rates_follow_the_stated_formula():
    """corr(i, j) = q/(1-q) sqrt(o_i o_j), o = (1-p)/p, q/(1-q) = ρ p_min/(1-p_min): at most ρ."""
    rho, p = 0.6, torch.tensor([0.05, 0.2, 0.4])
    dist = FeatureDistribution(3, p, correlated_groups=CorrelatedGroups([[0, 1, 2]], rho), sampling="sparse",
                               device="cpu")
    fires = dist.sample(200_000, torch.Generator().manual_seed(4))[:, 0] > 0
    assert _rates_match(fires, p)
    odds = (1 - p) / p
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        expected = rho / odds[0] * (odds[i] * odds[j]).sqrt()
        assert _phi(fires[:, i], fires[:, j]) == pytest.approx(expected.item(), abs=0.02)
        assert expected <= rho + 1e-9


def test_exclusive_groups_never_fire_twice_and_keep_rates():
    p = torch.tensor([[0.3, 0.5, 0.2, 0.05, 0.1, 0.4], [0.01, 0.02, 0.03, 0.0, 0.5, 0.5]])
    dist = FeatureDistribution(6, p, n_instances=2, exclusive_groups=[[0, 1, 2], [3, 4, 5]], device="cpu")
    assert isinstance(dist.exclusive_groups, ExclusiveGroups)
    fires = dist.sample(100_000, torch.Generator().manual_seed(0)) > 0
    assert fires[..., :3].sum(-1).max() <= 1 and fires[..., 3:].sum(-1).max() <= 1
    assert fires[:, 0, :3].any(-1).all()  # that group's rates sum to 1: exactly one always fires
    assert _rates_match(fires, p)


def test_hierarchy_children_fire_only_with_their_parent_and_at_most_one_when_exclusive():
    # 0 -> {1, 2, 3}, 1 -> {4, 5} (two levels); 6 -> {7, 8}; 9 free
    tree = Hierarchy({0: [1, 2, 3], 1: [4, 5], 6: [7, 8]}, exclusive_children=True)
    p = torch.tensor([0.3, 0.12, 0.06, 0.09, 0.05, 0.06, 0.2, 0.1, 0.1, 0.05])
    dist = FeatureDistribution(10, p, hierarchy=tree, sampling="sparse", device="cpu")
    assert dist.parent.tolist() == [-1, 0, 0, 0, 1, 1, -1, 6, 6, -1]
    assert torch.allclose(dist.firing_prob[0], p)  # marginal rates as given
    fires = dist.sample(200_000, torch.Generator().manual_seed(1))[:, 0] > 0
    child = dist.parent >= 0
    assert not (fires[:, child] & ~fires[:, dist.parent[child]]).any()  # never a child without its parent
    for siblings in ([1, 2, 3], [4, 5], [7, 8]):
        assert fires[:, siblings].sum(-1).max() <= 1
    assert _rates_match(fires, p)


def test_hierarchy_with_conditional_child_prob_reports_marginal_rates():
    tree = Hierarchy.regular(n_parents=2, n_children=3, child_prob=0.4)  # 0 -> 2,3,4; 1 -> 5,6,7
    dist = FeatureDistribution(8, Zipf(1.0, 3.0), n_instances=1, hierarchy=tree, device="cpu")
    given = Zipf(1.0, 3.0).resolve(1, 8, "cpu")[0]
    expected = given.clone()
    expected[2:5], expected[5:8] = 0.4 * given[0], 0.4 * given[1]
    assert torch.allclose(dist.firing_prob[0], expected)
    assert dist.expected_l0().item() == pytest.approx(expected.sum().item())
    fires = dist.sample(100_000, torch.Generator().manual_seed(2))[:, 0] > 0
    assert not (fires[:, 2:5] & ~fires[:, [0]]).any() and not (fires[:, 5:8] & ~fires[:, [1]]).any()
    assert _rates_match(fires, expected)
    # siblings are independent given the parent: P(2 and 3 | 0) = 0.4²
    both = (fires[:, 2] & fires[:, 3])[fires[:, 0]].double().mean().item()
    assert both == pytest.approx(0.16, abs=0.01)


def test_structures_compose_hierarchy_roots_in_groups_with_zipf_and_dense_draws():
    """A parent in an exclusive group, another in a correlated group: all guarantees hold at once."""
    tree = Hierarchy({0: [6, 7], 2: [8, 9]}, exclusive_children=True, child_prob=0.45)
    dist = FeatureDistribution(12, Zipf(0.5, 3.0), n_instances=2, exclusive_groups=[[0, 1]],
                               correlated_groups=CorrelatedGroups([[2, 3, 4]], 0.5), hierarchy=tree,
                               sampling="dense", device="cpu")
    fires = dist.sample(100_000, torch.Generator().manual_seed(3)) > 0
    child = dist.parent >= 0
    assert not (fires[..., child] & ~fires[..., dist.parent[child]]).any()
    assert fires[..., [0, 1]].sum(-1).max() <= 1
    assert fires[..., [6, 7]].sum(-1).max() <= 1 and fires[..., [8, 9]].sum(-1).max() <= 1
    assert _rates_match(fires, dist.firing_prob)
    assert _phi(fires[:, 0, 3], fires[:, 0, 4]) > 0.2


def test_structured_sampling_is_seeded():
    dist = FeatureDistribution(40, Zipf(1.0, 4.0), n_instances=2, hierarchy=Hierarchy.regular(4, 3),
                               exclusive_groups=ExclusiveGroups.consecutive(3, 4, start=16),
                               correlated_groups=CorrelatedGroups.consecutive(2, 5, start=28, correlation=0.5),
                               magnitude=Exponential(0.5), device="cpu")
    a = dist.sample(256, torch.Generator().manual_seed(7))
    b = dist.sample(256, torch.Generator().manual_seed(7))
    c = dist.sample(256, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    moved = dist.to("cpu")
    assert torch.equal(moved.sample(256, torch.Generator().manual_seed(7)), a)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"exclusive_groups": [[0, 1], [1, 2]]}, ValueError, "feature 1"),
    ({"exclusive_groups": [[0, 9]]}, ValueError, "feature 9"),
    ({"exclusive_groups": [[0]]}, ValueError, "at least 2"),
    ({"firing_prob": 0.6, "exclusive_groups": [[0, 1]]}, ValueError, "sum to 1.2"),
    ({"correlated_groups": [[0, 1]]}, TypeError, "CorrelatedGroups"),
    ({"correlated_groups": CorrelatedGroups([[0, 1]], 0.5), "exclusive_groups": [[1, 2]]}, ValueError, "feature 1"),
    ({"hierarchy": {0: [1], 2: [1]}}, ValueError, "more than one parent"),
    ({"hierarchy": {0: [1], 1: [0]}}, ValueError, "cycle"),
    ({"hierarchy": {0: [1]}, "firing_prob": [0.1, 0.2, 0.1, 0.1]}, ValueError, "child 1"),
    ({"hierarchy": Hierarchy({0: [1, 2]}, exclusive_children=True, child_prob=0.6)}, ValueError, "summing to 1.2"),
    ({"hierarchy": Hierarchy({0: [1]}, child_prob=1.5)}, ValueError, "child_prob"),
    ({"hierarchy": {0: [1]}, "exclusive_groups": [[1, 2]]}, ValueError, "hierarchy child"),
    ({"hierarchy": {0: [5]}}, ValueError, "feature 5"),
])
def test_bad_structure_is_a_clear_error(kwargs, error, message):
    kwargs = {"firing_prob": 0.1, **kwargs}
    with pytest.raises(error, match=message):
        FeatureDistribution(4, device="cpu", **kwargs)


def test_correlation_must_be_in_the_unit_interval():
    with pytest.raises(ValueError, match="correlation"):
        CorrelatedGroups([[0, 1]], correlation=1.5)
    with pytest.raises(ValueError, match="correlation"):
        CorrelatedGroups([[0, 1], [2, 3]], correlation=[0.1, 0.2, 0.3])


def test_float_masks_mark_the_positive_entries():
    from toysuper.float_masks import positive, positive_
    t = torch.tensor([-2.0, -1e-30, 0.0, 1e-30, 0.5, 1.0, 7.0])
    want = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert torch.equal(positive(t), want) and t[0] == -2.0  # a new tensor
    assert torch.equal(positive_(t), want) and torch.equal(t, want)  # in place
