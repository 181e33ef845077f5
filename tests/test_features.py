import math

import pytest
import torch

from toysuper import FeatureDistribution
from toysuper.devices import instance_generators
from toysuper.truth import poisson
from toysuper.truth.correlation import LowRankCorrelation
from toysuper.truth.distribution import SparseFeatures
from toysuper.truth.frequencies import Zipf
from toysuper.truth.groups import CorrelatedGroups, ExclusiveGroups
from toysuper.truth.hierarchy import Hierarchy
from toysuper.truth.magnitudes import Constant, Exponential, FoldedNormal, TruncatedNormal, Uniform
from device import DEVICE


def test_sample_shape_and_firing_rate_per_instance():
    dist = FeatureDistribution.sparsity_sweep(50, [0.0, 0.5, 0.9], device=DEVICE)
    x = dist.sample(20_000, torch.Generator(DEVICE).manual_seed(0))
    assert x.shape == (20_000, 3, 50)
    rate = (x > 0).float().mean((0, 2))
    assert torch.allclose(rate, torch.tensor([1.0, 0.5, 0.1]), atol=0.01)
    assert x.min() >= 0 and x.max() <= 1
    # magnitudes of firing features are U[0, 1]: mean 1/2
    assert abs(x[:, 0].mean().item() - 0.5) < 0.01


def test_per_feature_probabilities_and_importance_broadcast():
    p = torch.tensor([0.0, 0.25, 1.0])
    dist = FeatureDistribution(3, p, n_instances=2, importance=[1.0, 0.5, 0.25], device=DEVICE)
    x = dist.sample(10_000, torch.Generator(DEVICE).manual_seed(1))
    rate = (x > 0).float().mean(0)
    assert torch.allclose(rate, p.expand(2, 3), atol=0.02)
    assert dist.importance.shape == (2, 3) and dist.importance[1, 2] == 0.25
    assert torch.allclose(dist.expected_l0(), torch.tensor([1.25, 1.25]))


def test_same_seed_same_samples():
    dist = FeatureDistribution(10, 0.3, n_instances=2, device=DEVICE)
    a = dist.sample(64, torch.Generator(DEVICE).manual_seed(7))
    b = dist.sample(64, torch.Generator(DEVICE).manual_seed(7))
    c = dist.sample(64, torch.Generator(DEVICE).manual_seed(8))
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
        FeatureDistribution(4, device=DEVICE, **kwargs)


def test_exactly_one_of_firing_prob_and_sparsity():
    with pytest.raises(ValueError, match="exactly one"):
        FeatureDistribution(4, 0.1, sparsity=0.9, device=DEVICE)
    with pytest.raises(ValueError, match="n_features"):
        FeatureDistribution(0, 0.1, device=DEVICE)


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
    dist = FeatureDistribution(1000, Zipf(exponent=1.2, l0=[5.0, 20.0]), n_instances=2, device=DEVICE)
    p = dist.firing_prob
    assert torch.allclose(dist.expected_l0(), torch.tensor([5.0, 20.0]), rtol=1e-5)
    # unsaturated rates fall as rank^-1.2: p_9 / p_99 = (100 / 10)^1.2
    assert p[0, 9] / p[0, 99] == pytest.approx(10 ** 1.2, rel=1e-4)
    assert (p[:, :-1] >= p[:, 1:]).all()
    # at L0 = 30 over 16,384 features with exponent 1 the head saturates at 1 and the sum still holds
    saturated = Zipf(1.0, 30).resolve(1, 16384, "cpu")
    assert saturated[0, 0] == 1.0 and saturated.sum().item() == pytest.approx(30.0, rel=1e-5)
    x = dist.sample(20_000, torch.Generator(DEVICE).manual_seed(0))
    assert _rates_match(x > 0, p)
    assert Zipf(0.0, 4).resolve(1, 8, "cpu").tolist() == [[0.5] * 8]


@pytest.mark.parametrize("law, message", [
    (Zipf(1.0, 0.0), "l0"), (Zipf(1.0, 11.0), "l0"), (Zipf(1.0, float("nan")), "l0"),
])
def test_zipf_bad_l0_names_it(law, message):
    with pytest.raises(ValueError, match=message):
        FeatureDistribution(10, law, device=DEVICE)


def test_zipf_bad_exponent_names_it():
    with pytest.raises(ValueError, match="exponent"):
        Zipf(-1.0, 3)


def test_poisson_budget_is_the_least_with_a_tail_below_1e_12():
    from scipy.special import pdtrc

    for mean in (0.0, 0.3, 8.03, 2157.0, 123_000.0):
        k = poisson.budget(mean)
        assert pdtrc(k, mean) < 1e-12
        assert k == 1 or pdtrc(k - 1, mean) >= 1e-12


@pytest.mark.parametrize("rates", [
    torch.full((12,), 0.03),  # one rate: the cell is ⌊T/μ⌋
    torch.tensor([0.2, 0.24, 0.0, 0.01, 1e-4, 0.05, 0.05, 0.13]),  # several: the guide-table search
])
def test_poisson_events_are_an_exact_independent_bernoulli_grid(rates):
    """Every cell fires with its rate (5 standard errors) and neighbouring cells are uncorrelated."""
    table = poisson.build_table([rates, rates.flip(0)], [torch.arange(len(rates))] * 2, "cpu")
    assert (table.neg_inv_unit_rate is not None) == bool((rates == rates[0]).all())
    batch = 200_000
    budget = poisson.budget(batch * float(table.row_rate.max()))
    events = poisson.events(torch.rand(2, budget, generator=torch.Generator(DEVICE).manual_seed(0)), table, batch)
    fires = torch.zeros(2, (batch + 1) * len(rates))
    fires.scatter_add_(1, events.place, events.keep)
    fires = fires.view(2, batch + 1, len(rates))  # the last row, past the batch, takes the unused slots
    assert fires[:, :batch].max() == 1  # each (row, feature) at most once
    fires = fires[:, :batch].transpose(0, 1)
    assert _rates_match(fires > 0, torch.stack([rates, rates.flip(0)]))
    assert torch.equal(events.overflow, torch.zeros(2))
    column = fires[:, 0, 0] > 0  # neighbours along the line are independent: across rows and within a row
    assert abs(_phi(column[:-1], column[1:])) < Z / math.sqrt(batch)
    assert abs(_phi(column, fires[:, 0, 1] > 0)) < Z / math.sqrt(batch)


def test_poisson_overflow_is_counted_and_keeps_events_inside_the_batch():
    table = poisson.build_table([torch.full((10,), 0.3)], [torch.arange(10)], "cpu")
    events = poisson.events(torch.rand(1, 50, generator=torch.Generator(DEVICE).manual_seed(0)), table, 100)
    assert events.overflow.tolist() == [1.0]  # ~357 points expected in 100 rows: 50 slots cannot hold them
    assert (events.place < 100 * 10).all()
    dist = FeatureDistribution(10, 0.3, sampling="sparse", device=DEVICE)
    dist.sample(100, torch.Generator(DEVICE).manual_seed(0))
    assert dist.overflow.tolist() == [0.0]
    tight = FeatureDistribution(10, 0.3, sampling="sparse", device=DEVICE)
    tight._budgets[100] = 50  # a budget far too small, to see the counter move
    tight.sample(100, torch.Generator(DEVICE).manual_seed(0))
    tight.sample_sparse(100, torch.Generator(DEVICE).manual_seed(1))
    assert tight.overflow.item() >= 2


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
    x = FeatureDistribution(n, Zipf(1.0, 30), device=DEVICE).sample(batch, torch.Generator(DEVICE).manual_seed(0))
    assert x.shape == (batch, 1, n)
    assert sum(sizes) < batch * n / 50  # ~2 uniforms per Poisson point, one per row of the few dense features
    assert (x > 0).sum(-1).float().mean().item() == pytest.approx(30, rel=0.05)


@pytest.mark.parametrize("sampling", ["auto", "sparse", "dense"])
def test_every_sampling_gives_exact_rates_and_the_same_magnitudes(sampling):
    p = torch.tensor([[0.0, 1.0, 0.9, 0.3, 0.01, 0.002], [0.5, 0.0, 0.05, 0.6, 1e-4, 1.0]])
    dist = FeatureDistribution(6, p, n_instances=2, sampling=sampling, device=DEVICE)
    x = dist.sample(100_000, torch.Generator(DEVICE).manual_seed(3))
    fires = x > 0
    assert _rates_match(fires, p)
    assert not fires[:, 0, 0].any() and not fires[:, 1, 1].any()  # p = 0 never fires
    assert fires[:, 0, 1].all() and fires[:, 1, 5].all()  # p = 1 always fires
    assert x.max() < 1 and abs(x[fires].mean().item() - 0.5) < 0.01  # U[0, 1) magnitudes
    with pytest.raises(ValueError, match="sampling"):
        FeatureDistribution(3, 0.1, sampling="fast", device=DEVICE)


def test_the_rule_draws_rare_free_features_by_events_and_the_rest_in_dense_slots():
    p = torch.tensor([[0.1, 0.3, 0.2, 0.9], [0.5, 0.5, 0.01, 0.0]])
    dist = FeatureDistribution(4, p, n_instances=2, device=DEVICE)
    assert dist.slot_feature[0].tolist() == [1, 3] and dist.slot_feature[1].tolist() == [0, 1]
    drawn = dist.draw(8, torch.Generator(DEVICE).manual_seed(0))
    assert drawn.slots.shape == (2, 8, 2) and drawn.place.shape[1] == poisson.budget(8 * -math.log(0.9 * 0.8))
    structured = FeatureDistribution(4, 0.01, hierarchy={0: [1]}, device=DEVICE)
    assert structured.slot_feature[0].tolist() == [0, 1]  # a hierarchy's features are dense slots


@pytest.mark.parametrize("sampling", ["auto", "dense"])
def test_samples_are_stored_instance_major_and_the_sparse_form_is_the_same_draw(sampling):
    """(batch, inst, n) with each instance's (batch, n) block contiguous, which batched models read faster."""
    dist = FeatureDistribution(20, 0.1, n_instances=4, sampling=sampling, device=DEVICE)
    x = dist.sample(300, torch.Generator(DEVICE).manual_seed(0))
    assert x.shape == (300, 4, 20) and x.stride(0) == 20 and x.stride(2) == 1  # each (batch, n) block contiguous
    sparse = dist.sample_sparse(300, torch.Generator(DEVICE).manual_seed(0))
    assert isinstance(sparse, SparseFeatures) and sparse.index.shape == sparse.value.shape
    assert sparse.index.shape[:2] == (300, 4)
    assert torch.equal(sparse.to_dense(20), x)
    fired = torch.zeros(300, 4, 20).scatter_add_(-1, sparse.index, (sparse.value > 0).float())
    assert fired.max() == 1  # a feature at most once per row


def test_sparse_form_has_fixed_slots_whatever_the_draw():
    dist = FeatureDistribution(1024, 8 / 1024, device=DEVICE)
    shapes = {dist.sample_sparse(256, torch.Generator(DEVICE).manual_seed(s)).index.shape for s in range(5)}
    assert shapes == {(256, 1, poisson.budget(-1024 * math.log(1 - 8 / 1024)))}
    assert dist.overflow.tolist() == [0.0]


def test_per_instance_generators_make_each_instance_its_own_stream():
    """Instance i of a batch equals the one-instance distribution of its settings on stream i."""
    law = Zipf(1.0, [2.0, 4.0, 1.0])
    tree = Hierarchy.regular(2, 2, start=10, exclusive_children=True, child_prob=[[0.4], [0.3], [0.2]])
    settings = dict(magnitude=Exponential([[0.5], [1.0], [2.0]]), hierarchy=tree,
                    correlated_groups=CorrelatedGroups([[20, 21]], 0.5), device=DEVICE)
    dist = FeatureDistribution(60, law, n_instances=3, **settings)
    together = dist.sample(200, instance_generators(7, DEVICE, n_instances=3))
    for i in range(3):
        alone = dist.select([i])
        assert torch.equal(alone.sample(200, instance_generators([7 + i], DEVICE)), together[:, [i]])
    # a torch.Generator seeds fresh streams from its state: equal states draw equal batches, and the draw moves it on
    first, again = (dist.sample(200, torch.Generator(DEVICE).manual_seed(7)) for _ in range(2))
    generator = torch.Generator(DEVICE).manual_seed(7)
    assert torch.equal(first, again) and torch.equal(dist.sample(200, generator), first)
    assert not torch.equal(dist.sample(200, generator), first)
    # a sweep that mixes dense instances, sparse ones and one that never fires
    sweep = FeatureDistribution.sparsity_sweep(20, [0.0, 0.7, 0.99, 1.0, 0.9], device=DEVICE)
    assert sweep.dense_instances == [0, 1] and sweep.event_instances == [2, 4]
    together = sweep.sample(300, instance_generators(3, DEVICE, n_instances=5))
    assert (together[:, 3] == 0).all() and (together[:, 0] > 0).all()
    for i in range(5):
        alone = sweep.select([i]).sample(300, instance_generators([3 + i], DEVICE))
        assert torch.equal(alone, together[:, [i]])
    with pytest.raises(ValueError, match="Streams of 2 instances"):
        dist.sample(10, instance_generators(0, DEVICE, n_instances=2))
    with pytest.raises(ValueError, match="one torch.Generator per instance"):
        dist.sample(10, [torch.Generator(DEVICE)] * 2)
    with pytest.raises(TypeError, match="seeds"):
        instance_generators([1, True], DEVICE)
    with pytest.raises(ValueError, match="n_instances"):
        instance_generators(3, DEVICE)


def _dists_to_compile():
    return {
        "independent": FeatureDistribution(300, torch.linspace(0.001, 0.4, 300), n_instances=2, device=DEVICE),
        "one rate": FeatureDistribution(300, 0.02, n_instances=2, device=DEVICE),
        "structured": FeatureDistribution(
            40, Zipf(1.0, 4.0), n_instances=2, magnitude=TruncatedNormal(1.0, 0.5),
            hierarchy=Hierarchy.regular(4, 3, exclusive_children=True, scale_children_by_parent=True),
            exclusive_groups=ExclusiveGroups.consecutive(3, 4, start=16),
            correlated_groups=CorrelatedGroups.consecutive(2, 5, start=28, correlation=0.5), device=DEVICE),
        "copula": FeatureDistribution(50, 0.1, n_instances=2, correlation=LowRankCorrelation(4, 0.2),
                                      hierarchy=Hierarchy.regular(2, 3), magnitude=FoldedNormal(1.0, 0.3),
                                      device=DEVICE),
    }


@pytest.mark.parametrize("name", ["independent", "one rate", "structured", "copula"])
def test_every_transform_compiles_whole_and_matches_eager(name):
    """The CI proof that a draw has fixed shapes and no host sync: numbers -> features compiles with
    fullgraph=True (a graph break or a data-dependent shape would raise) and equals eager."""
    dist = _dists_to_compile()[name]
    numbers = dist.numbers(64, torch.Generator(DEVICE).manual_seed(0))
    eager = dist.transform(numbers)
    compiled = torch.compile(dist.transform, fullgraph=True, dynamic=False, backend="aot_eager")(numbers)
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
    for form in (dist.to_dense, dist.to_sparse):
        compiled = torch.compile(form, fullgraph=True, dynamic=False, backend="aot_eager")(eager)
        assert all(torch.equal(a, b) for a, b in zip(form(eager), compiled))



@pytest.mark.parametrize("law", [Uniform(0.5, 2.0), Constant(3.0), Exponential(0.4), FoldedNormal(0.5, 1.0),
                                 FoldedNormal(-2.0, 0.3), TruncatedNormal(0.5, 1.0), TruncatedNormal(4.0, 0.5)])
@pytest.mark.parametrize("sampling", ["dense", "sparse"])
def test_magnitude_laws_match_their_moments(law, sampling):
    dist = FeatureDistribution(4, 0.3, n_instances=2, magnitude=law, sampling=sampling, device=DEVICE)
    x = dist.sample(40_000, torch.Generator(DEVICE).manual_seed(1))
    values = x[x > 0].double()
    mean, second = dist.magnitude.mean()[0, 0].item(), dist.magnitude.second_moment()[0, 0].item()
    se = math.sqrt(max(second - mean ** 2, 1e-12) / len(values))
    assert abs(values.mean().item() - mean) <= Z * se + 1e-6
    assert values.pow(2).mean().item() == pytest.approx(second, rel=0.03)
    assert _rates_match(x > 0, dist.firing_prob)


def test_magnitudes_per_feature():
    dist = FeatureDistribution(3, 0.5, magnitude=Constant([1.0, 2.0, 3.0]), sampling="sparse", device=DEVICE)
    x = dist.sample(2000, torch.Generator(DEVICE).manual_seed(0))[:, 0]
    for i, value in enumerate([1.0, 2.0, 3.0]):
        assert set(x[:, i].unique().tolist()) == {0.0, value}


@pytest.mark.parametrize("law, name", [
    (lambda: Uniform(-0.1, 1.0), "low"), (lambda: Uniform(1.0, 0.5), "high"), (lambda: Constant(0.0), "value"),
    (lambda: Exponential([1.0, -1.0, 1.0]), "mean"), (lambda: FoldedNormal(0.0, 0.0), "std"),
    (lambda: Uniform(0.0, [1.0, 2.0]), "high"), (lambda: Exponential(float("inf")), "mean"),
    (lambda: TruncatedNormal(1.0, 0.0), "std"), (lambda: TruncatedNormal(-6.0, 1.0), "mean"),
])
def test_bad_magnitudes_name_the_parameter(law, name):
    with pytest.raises(ValueError, match=name):
        FeatureDistribution(3, 0.5, magnitude=law(), device=DEVICE)


def test_magnitude_must_be_a_law():
    with pytest.raises(TypeError, match="magnitude"):
        FeatureDistribution(3, 0.5, magnitude="uniform", device=DEVICE)


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.8])
def test_correlated_groups_reach_the_stated_correlation_and_keep_rates(rho):
    groups = CorrelatedGroups([[0, 1, 2], [3, 4]], correlation=rho)
    p = torch.tensor([0.1, 0.1, 0.1, 0.02, 0.02, 0.1])
    dist = FeatureDistribution(6, p, correlated_groups=groups, device=DEVICE)
    fires = dist.sample(200_000, torch.Generator(DEVICE).manual_seed(2))[:, 0] > 0
    assert _rates_match(fires, p)
    for i, j in [(0, 1), (1, 2), (3, 4)]:
        assert _phi(fires[:, i], fires[:, j]) == pytest.approx(rho, abs=0.02)
    for i, j in [(0, 3), (2, 5), (4, 5)]:  # across groups and outside: independent
        assert abs(_phi(fires[:, i], fires[:, j])) < 0.02


def test_correlated_groups_with_unequal_rates_follow_the_stated_formula():
    """corr(i, j) = q/(1-q) sqrt(o_i o_j), o = (1-p)/p, q/(1-q) = ρ p_min/(1-p_min): at most ρ."""
    rho, p = 0.6, torch.tensor([0.05, 0.2, 0.4])
    dist = FeatureDistribution(3, p, correlated_groups=CorrelatedGroups([[0, 1, 2]], rho), device=DEVICE)
    fires = dist.sample(200_000, torch.Generator(DEVICE).manual_seed(4))[:, 0] > 0
    assert _rates_match(fires, p)
    odds = (1 - p) / p
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        expected = rho / odds[0] * (odds[i] * odds[j]).sqrt()
        assert _phi(fires[:, i], fires[:, j]) == pytest.approx(expected.item(), abs=0.02)
        assert expected <= rho + 1e-9


def test_exclusive_groups_never_fire_twice_and_keep_rates():
    p = torch.tensor([[0.3, 0.5, 0.2, 0.05, 0.1, 0.4], [0.01, 0.02, 0.03, 0.0, 0.5, 0.5]])
    dist = FeatureDistribution(6, p, n_instances=2, exclusive_groups=[[0, 1, 2], [3, 4, 5]], device=DEVICE)
    assert isinstance(dist.exclusive_groups, ExclusiveGroups)
    fires = dist.sample(100_000, torch.Generator(DEVICE).manual_seed(0)) > 0
    assert fires[..., :3].sum(-1).max() <= 1 and fires[..., 3:].sum(-1).max() <= 1
    assert fires[:, 0, :3].any(-1).all()  # that group's rates sum to 1: exactly one always fires
    assert _rates_match(fires, p)


def test_hierarchy_children_fire_only_with_their_parent_and_at_most_one_when_exclusive():
    # 0 -> {1, 2, 3}, 1 -> {4, 5} (two levels); 6 -> {7, 8}; 9 free
    tree = Hierarchy({0: [1, 2, 3], 1: [4, 5], 6: [7, 8]}, exclusive_children=True)
    p = torch.tensor([0.3, 0.12, 0.06, 0.09, 0.05, 0.06, 0.2, 0.1, 0.1, 0.05])
    dist = FeatureDistribution(10, p, hierarchy=tree, device=DEVICE)
    assert dist.parent.tolist() == [-1, 0, 0, 0, 1, 1, -1, 6, 6, -1]
    assert torch.allclose(dist.firing_prob[0], p)  # marginal rates as given
    fires = dist.sample(200_000, torch.Generator(DEVICE).manual_seed(1))[:, 0] > 0
    child = dist.parent >= 0
    assert not (fires[:, child] & ~fires[:, dist.parent[child]]).any()  # never a child without its parent
    for siblings in ([1, 2, 3], [4, 5], [7, 8]):
        assert fires[:, siblings].sum(-1).max() <= 1
    assert _rates_match(fires, p)


def test_hierarchy_with_conditional_child_prob_reports_marginal_rates():
    tree = Hierarchy.regular(n_parents=2, n_children=3, child_prob=0.4)  # 0 -> 2,3,4; 1 -> 5,6,7
    dist = FeatureDistribution(8, Zipf(1.0, 3.0), n_instances=1, hierarchy=tree, device=DEVICE)
    given = Zipf(1.0, 3.0).resolve(1, 8, "cpu")[0]
    expected = given.clone()
    expected[2:5], expected[5:8] = 0.4 * given[0], 0.4 * given[1]
    assert torch.allclose(dist.firing_prob[0], expected)
    assert dist.expected_l0().item() == pytest.approx(expected.sum().item())
    fires = dist.sample(100_000, torch.Generator(DEVICE).manual_seed(2))[:, 0] > 0
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
                               sampling="dense", device=DEVICE)
    fires = dist.sample(100_000, torch.Generator(DEVICE).manual_seed(3)) > 0
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
                               magnitude=Exponential(0.5), device=DEVICE)
    a = dist.sample(256, torch.Generator(DEVICE).manual_seed(7))
    b = dist.sample(256, torch.Generator(DEVICE).manual_seed(7))
    c = dist.sample(256, torch.Generator(DEVICE).manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    moved = dist.to(DEVICE)
    assert torch.equal(moved.sample(256, torch.Generator(DEVICE).manual_seed(7)), a)


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
        FeatureDistribution(4, device=DEVICE, **kwargs)


def test_correlation_must_be_in_the_unit_interval():
    with pytest.raises(ValueError, match="correlation"):
        CorrelatedGroups([[0, 1]], correlation=1.5)
    with pytest.raises(ValueError, match="correlation"):
        CorrelatedGroups([[0, 1], [2, 3]], correlation=[0.1, 0.2, 0.3])


def test_a_hierarchy_with_a_cycle_is_refused_when_built():
    with pytest.raises(ValueError, match="cycle through feature 0"):
        Hierarchy({0: [1], 1: [0]})
    with pytest.raises(ValueError, match="cycle through feature 1"):
        Hierarchy({0: [2], 1: [3], 3: [1]})  # a loop beside a proper tree
    assert Hierarchy({0: [1], 1: [2]}).levels() == [[1], [2]]  # a chain is no cycle
