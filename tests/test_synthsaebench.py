"""SAELens's synthetic world as a toysuper source, and SynthSAEBench's metrics in the report.

The world is a small SyntheticModel built by SAELens itself (hierarchy with mutually exclusive,
parent-scaled children; low-rank correlated firing; varied magnitudes; a bias). The metrics are
checked against SAELens's own `eval_sae_on_synthetic_data` on the same SAE and the very same
samples, for SAEs from SAELens and from toysuper. Nothing is mocked.
"""

import sys

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.synthetic import (FoldedNormalMagnitudeConfig, HierarchyConfig, LinearMagnitudeConfig, SyntheticModel,
                                SyntheticModelConfig, ZipfianFiringProbabilityConfig, eval_sae_on_synthetic_data,
                                feature_uniqueness)
from sae_lens.synthetic.synthetic_model import LowRankCorrelationConfig
from sae_lens.util import cosine_similarities

import toysuper as ts
from toysuper.devices import make_generator
from toysuper.grade.matching import match
from toysuper.grade.synthsaebench_metrics import (SynthSAEBenchSums, best_abs_feature, classification,
                                                   explained_variance, mcc, uniqueness)
from device import DEVICE

N_FEATURES, D_HIDDEN = 300, 48
TOLERANCE = 1e-5


def _config(hierarchy=True, **overrides) -> SyntheticModelConfig:
    options = dict(
        num_features=N_FEATURES, hidden_dim=D_HIDDEN,
        firing_probability=ZipfianFiringProbabilityConfig(exponent=0.5, max_prob=0.4, min_prob=5e-3),
        hierarchy=HierarchyConfig(total_root_nodes=12, branching_factor=3, max_depth=2, mutually_exclusive_portion=1.0,
                                  compensate_probabilities=True, scale_children_by_parent=True) if hierarchy else None,
        correlation=LowRankCorrelationConfig(rank=5, correlation_scale=0.1),
        mean_firing_magnitudes=LinearMagnitudeConfig(start=5.0, end=4.0),
        std_firing_magnitudes=FoldedNormalMagnitudeConfig(mean=0.5, std=0.5), bias=0.5, seed=42)
    return SyntheticModelConfig(**{**options, **overrides})


@pytest.fixture(scope="module")
def model():
    return SyntheticModel(_config(), device=DEVICE)


# --- the world as a source -------------------------------------------------------------------

def test_without_a_generator_the_world_is_saelens_own_stream(model):
    world = ts.SAELensWorld(model)
    assert (world.n_instances, world.n_features, world.d_hidden, world.device) == (1, 300, 48, torch.device(DEVICE))
    torch.manual_seed(7)
    hidden, features = model.sample_with_features(500)
    torch.manual_seed(7)
    batch = world.sample(500)
    assert batch.hidden.shape == (500, 1, 48) and batch.features.shape == (500, 1, 300)
    assert torch.equal(batch.features[:, 0], features) and torch.equal(batch.hidden[:, 0], hidden)
    vectors = model.feature_dict.feature_vectors
    assert torch.allclose(world.true_directions()[0], vectors / vectors.norm(dim=-1, keepdim=True), atol=1e-6)
    assert world.gradeable().all()


def test_seeded_streams_are_reproducible_per_instance_and_leave_torch_global_stream_alone(model):
    world = ts.SAELensWorld(model, n_instances=3)
    state = torch.get_rng_state()
    one = world.sample(200, torch.Generator(DEVICE).manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    again = world.sample(200, torch.Generator(DEVICE).manual_seed(1))
    other = world.sample(200, torch.Generator(DEVICE).manual_seed(2))
    assert torch.equal(one.features, again.features) and torch.equal(one.hidden, again.hidden)
    assert not torch.equal(one.features, other.features)
    assert not torch.equal(one.features[:, 0], one.features[:, 1])  # instances see different samples
    assert ts.SAELensWorld(model, n_instances=1).sample_hidden(200, torch.Generator(DEVICE).manual_seed(1)).shape == (200, 1, 48)
    # a generator per instance: instance i's samples come from generator i alone
    streams = world.sample(200, [torch.Generator(DEVICE).manual_seed(s) for s in (10, 11, 12)])
    alone = ts.SAELensWorld(model).sample(200, [torch.Generator(DEVICE).manual_seed(11)])
    assert torch.equal(streams.features[:, 1], alone.features[:, 0]) and torch.equal(streams.hidden[:, 1],
                                                                                     alone.hidden[:, 0])
    # and one generator for a one-instance world is the same stream as a list of it
    assert torch.equal(ts.SAELensWorld(model).sample(200, torch.Generator(DEVICE).manual_seed(11)).features, alone.features)


def test_the_saved_directory_is_the_same_world(model, tmp_path):
    model.save(tmp_path / "world")
    loaded, live = ts.SAELensWorld(tmp_path / "world", device=DEVICE), ts.SAELensWorld(model)
    assert torch.equal(loaded.true_directions(), live.true_directions())
    a, b = loaded.sample(300, torch.Generator(DEVICE).manual_seed(3)), live.sample(300, torch.Generator(DEVICE).manual_seed(3))
    assert torch.equal(a.features, b.features) and torch.equal(a.hidden, b.hidden)
    assert torch.equal(loaded.dist.parent, live.dist.parent)


def test_the_hierarchy_reaches_the_grader(model):
    world = ts.SAELensWorld(model)
    parent = world.dist.parent
    for root in model.hierarchy.roots:
        assert parent[root.feature_index] == -1
        for child in root.children:
            assert parent[child.feature_index] == root.feature_index
            assert all(parent[grandchild.feature_index] == child.feature_index for grandchild in child.children)
    assert (parent >= 0).sum() == 12 * (3 + 9)
    assert world.dist.firing_prob is None  # under a hierarchy SAELens's compensation is only approximate
    report = ts.evaluate(ts.TensorSAE(model.feature_dict.feature_vectors.detach(), lambda x: x @ model.feature_dict
                                      .feature_vectors.detach().T), world, n_samples=1000, quiet=True)
    assert (report.features["parent"].to_numpy() == parent.numpy()).all()
    assert report.summary["absorption"].notna().all()
    assert report.summary[["sb_shrinkage", "sb_explained_variance"]].isna().all().all()  # no decode: no x̂


def test_firing_probabilities_are_exact_without_a_hierarchy():
    # mean 1, std 1: ReLU(mean + std z) is 0 on 16% of draws, so P(f > 0) = p Φ(1) < p
    model = SyntheticModel(_config(hierarchy=False, mean_firing_magnitudes=1.0, std_firing_magnitudes=1.0))
    world = ts.SAELensWorld(model)
    p = world.dist.firing_prob[0].double()
    assert torch.allclose(p, model.activation_generator.firing_probabilities.double() * 0.841344746, rtol=1e-6)
    fires = world.sample(20_000, torch.Generator(DEVICE).manual_seed(0)).features[:, 0] > 0
    z = (fires.double().mean(0) - p) / (p * (1 - p) / 20_000).sqrt()
    assert z.abs().max() < 5


def test_bad_input_is_named(model, tmp_path, monkeypatch):
    with pytest.raises(TypeError, match="model must be a sae_lens SyntheticModel"):
        ts.SAELensWorld(_config())
    with pytest.raises(ValueError, match="synthetic_model_config.json"):
        ts.SAELensWorld(tmp_path)
    with pytest.raises(ValueError, match="n_instances"):
        ts.SAELensWorld(model, n_instances=0)
    with pytest.raises(TypeError, match="list of 2"):
        ts.SAELensWorld(model, n_instances=2).sample(10, [torch.Generator(DEVICE)])
    with pytest.raises(ValueError, match="batch_size"):
        ts.SAELensWorld(model).sample(0)
    with pytest.raises(ValueError, match="device='meta'"):
        ts.SAELensWorld(model, device="meta")
    monkeypatch.setitem(sys.modules, "sae_lens.synthetic", None)
    with pytest.raises(ImportError, match=r"toysuper\[saelens\]"):
        ts.SAELensWorld(model)


# --- SynthSAEBench's metrics against SAELens's own ---------------------------------------------

class _Replay:
    """What eval_sae_on_synthetic_data samples features from: the draws `evaluate` makes (same seed, same sizes)."""

    def __init__(self, world, seed, instance=0):
        self.world, self.instance, self.generator = world, instance, make_generator(seed, world.device)

    def sample(self, batch_size):
        return self.world.sample(batch_size, self.generator).features[:, self.instance]


class _OneOfOurs(torch.nn.Module):
    """Instance i of a toysuper SAE as SAELens's evaluation sees an SAE: W_dec, encode, decode without instances."""

    def __init__(self, sae, instance):
        super().__init__()
        self.sae, self.instance, self.W_dec = sae, instance, sae.decoder_directions()[instance].detach()

    def encode(self, x):
        return self.sae.encode(x[:, None].expand(-1, self.sae.n_instances, -1))[:, self.instance]

    def decode(self, acts):
        full = acts.new_zeros(acts.shape[0], self.sae.n_instances, acts.shape[1])
        full[:, self.instance] = acts
        return self.sae.decode(full)[:, self.instance]


def _saelens_numbers(result) -> dict:
    return {"sb_mcc": result.mcc, "sb_uniqueness": result.uniqueness, "sb_precision": result.classification.precision,
            "sb_recall": result.classification.recall, "sb_f1": result.classification.f1_score,
            "sb_accuracy": result.classification.accuracy, "sb_explained_variance": result.explained_variance,
            "sb_l0": result.sae_l0, "sb_dead_latents": result.dead_latents, "sb_shrinkage": result.shrinkage,
            "sb_true_l0": result.true_l0}


def _assert_equal_to_saelens(ours, sae, world, seed, n_samples, batch_size, instance=0) -> dict:
    """Every SynthSAEBench number of one report row within TOLERANCE of SAELens's on the same samples."""
    theirs = _saelens_numbers(eval_sae_on_synthetic_data(sae, world.model.feature_dict, _Replay(world, seed, instance),
                                                         num_samples=n_samples, batch_size=batch_size))
    differences = {name: abs(float(ours[name]) - float(value)) for name, value in theirs.items()}
    assert max(differences.values()) <= TOLERANCE, differences
    assert ours["sb_dead_latents"] == theirs["sb_dead_latents"]
    return differences


def _planted(model, d_sae, seed):
    """Decoder rows near true features (some flipped, so |cos| and cos differ; some doubled), random ones past them."""
    generator = torch.Generator(DEVICE).manual_seed(seed)
    vectors = model.feature_dict.feature_vectors.detach()
    rows = vectors[torch.randperm(N_FEATURES, generator=generator)[:min(d_sae, N_FEATURES)]]
    rows = torch.cat([rows, torch.randn(max(0, d_sae - N_FEATURES), D_HIDDEN, generator=generator)])
    rows[10:20] = rows[20:30]  # split: two latents on one feature, so uniqueness < 1
    rows = rows + 0.05 * torch.randn(rows.shape, generator=generator)  # cos about 0.95
    rows[:10] *= -1
    return rows / rows.norm(dim=-1, keepdim=True)


@torch.no_grad()
def test_metrics_equal_saelens_on_saelens_saes(model):
    world = ts.SAELensWorld(model)
    topk = TopKSAE(TopKSAEConfig(d_in=D_HIDDEN, d_sae=120, k=6, device=DEVICE))  # fewer latents than features
    topk.W_dec.copy_(_planted(model, 120, 0))
    topk.W_enc.copy_(topk.W_dec.T)
    relu = StandardSAE(StandardSAEConfig(d_in=D_HIDDEN, d_sae=400, device=DEVICE))  # more latents than features
    relu.W_dec.copy_(_planted(model, 400, 1))
    relu.W_enc.copy_(relu.W_dec.T)
    relu.b_enc.fill_(-2.0)
    relu.b_enc[::7] = -1e4  # dead
    relu.b_dec.copy_(model.feature_dict.bias)
    for sae in (topk, relu):
        report = ts.evaluate(sae, world, n_samples=3000, batch_size=1000, seed=5, quiet=True)
        row = report.summary.iloc[0]
        _assert_equal_to_saelens(row, sae, world, seed=5, n_samples=3000, batch_size=1000)
        assert 0 < row["sb_f1"] < 1 and 0 < row["sb_uniqueness"] < 1 and row["sb_mcc"] > 0.5
    assert row["sb_dead_latents"] >= 400 // 7  # the relu SAE's dead latents are counted, as SAELens counts them
    assert not np.isclose(row["sb_mcc"], row["hungarian_cos"])  # |cos| matching over min(n, k) pairs is not ours


def test_metrics_equal_saelens_on_a_toysuper_sae_trained_on_the_world(model):
    torch.manual_seed(0)
    world = ts.SAELensWorld(model, n_instances=2)
    sae = ts.SAE(d_hidden=D_HIDDEN, d_sae=256, n_instances=2, recipe="topk", k=8, seed=0, device=DEVICE)
    ts.train_sae(sae, world, steps=100, batch_size=256, quiet=True)
    report = ts.evaluate(sae, world, n_samples=3000, batch_size=1000, seed=9, quiet=True)
    for instance in range(2):
        row = report.summary.iloc[instance]
        _assert_equal_to_saelens(row, _OneOfOurs(sae, instance), world, seed=9, n_samples=3000, batch_size=1000,
                                 instance=instance)
        assert row["sb_explained_variance"] > 0.5 and row["sb_f1"] > 0.1
    latents = report.latents
    assert latents.groupby("instance")["sb_f1"].mean().to_numpy() == pytest.approx(report.summary["sb_f1"].to_numpy())


# --- the pure functions on cases worked by hand ---------------------------------------------------

def test_best_feature_by_abs_cosine_breaks_ties_like_argmax_across_chunks():
    G = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]])[None]  # features 1 and 2 coincide
    D = torch.tensor([[0, -1.0, 0], [0, 0, 0], [0.6, 0, -0.8], [0.1, 0, 0.99]])[None]
    expected = torch.tensor([[1, 0, 3, 3]])  # -g1 -> 1 (first of the tie), a zero row -> 0, |cos| picks 3 over 0
    for chunk in (1, 2, 3, 1 << 20):  # 1 entry per chunk: every feature in a chunk of its own
        assert torch.equal(best_abs_feature(G, D, chunk_entries=chunk * 4), expected)
    masked = best_abs_feature(G, D, row_mask=torch.tensor([[True, False, True, True]]))
    assert masked[0, 0] == 2
    assert uniqueness(expected, 4).item() == pytest.approx(3 / 4)
    assert torch.equal(cosine_similarities(D[0], G[0]).abs().argmax(1), expected[0])  # SAELens's rule, same answer
    assert feature_uniqueness(D[0], G[0]) == pytest.approx(3 / 4)


def test_mcc_matches_on_abs_cosine_over_the_smaller_side():
    G = torch.eye(3)
    D = torch.tensor([[-1.0, 0, 0], [0, 0.6, 0.8]])  # latent 0 is feature 0 reversed
    assert mcc(G, D) == pytest.approx((1.0 + 0.8) / 2)  # 2 pairs, not 3
    assert mcc(D, G) == pytest.approx((1.0 + 0.8) / 2)
    generator = torch.Generator(DEVICE).manual_seed(0)
    G, D = torch.randn(40, 16, generator=generator), torch.randn(90, 16, generator=generator)
    D[:40] = G * torch.where(torch.rand(40, 1, generator=generator) < 0.5, -1.0, 1.0) + 0.5 * torch.randn(40, 16,
                                                                                                            generator=generator)
    exact, sparse = match(G, D, "exact", absolute=True), match(G, D, "sparse", absolute=True, candidates=4)
    assert sparse.method == "sparse" and np.array_equal(exact.assignment.latent, sparse.assignment.latent)
    assert mcc(G, D, "sparse", candidates=4) == pytest.approx(mcc(G, D, "exact"))
    assert exact.assignment.cosine.mean() > match(G, D, "exact").assignment.cosine.mean() + 0.1  # half point away


def test_classification_and_explained_variance_by_hand():
    # latent 0: 3 firings, 2 with its feature (which fires 4 times); latent 1 dead; 10 samples
    scores = classification(torch.tensor([2.0, 0]), torch.tensor([3.0, 0]), torch.tensor([4.0, 5]), 10)
    assert scores["precision"].tolist() == pytest.approx([2 / 3, 0])
    assert scores["recall"].tolist() == pytest.approx([0.5, 0])
    assert scores["f1"].tolist() == pytest.approx([2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 0])
    assert scores["accuracy"].tolist() == pytest.approx([(2 + 5) / 10, 5 / 10])
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 2.0]])
    x_hat = torch.tensor([[1.0, 1.0], [2.0, 0.0], [2.0, 2.0]])
    variance = (x - x.mean(0)).pow(2).sum() / 3
    expected = 1 - (x - x_hat).pow(2).sum() / 3 / variance
    value = explained_variance((x - x_hat).pow(2).sum()[None], x.sum(0)[None], x.pow(2).sum()[None], 3)
    assert value.item() == pytest.approx(expected.item())
    flat = torch.ones(3, 2)
    assert explained_variance(torch.zeros(1), flat.sum(0)[None], flat.pow(2).sum()[None], 3).item() == 1.0
    assert explained_variance(torch.ones(1), flat.sum(0)[None], flat.pow(2).sum()[None], 3).item() == 0.0


def test_shrinkage_skips_inputs_of_no_norm_and_counts_nonzero_latents():
    sums = SynthSAEBenchSums(torch.tensor([[0, 1]]))
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])[:, None]  # the zero input has no shrinkage
    x_hat = torch.tensor([[1.5, 2.0], [1.0, 0.0], [2.0, 0.0]])[:, None]
    acts = torch.tensor([[1.0, -0.5], [0.0, 0.0], [2.0, 0.0]])[:, None]  # a negative latent fires too (!= 0)
    features = torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0]])[:, None]
    sums.update(acts, features, x, x_hat)
    assert sums.shrinkage_count.item() == 2 and sums.shrinkage_sum.item() == pytest.approx(0.5 + 2.0)
    assert sums.latent_fires.tolist() == [[2, 1]] and sums.true_positives.tolist() == [[1, 1]]
    summary, _ = sums.summary(3, torch.tensor([[1.0, 2.0]]), torch.zeros(1),
                              x.sum(0), x.pow(2).sum((0, 2)), has_decode=True)
    assert summary["sb_shrinkage"][0] == pytest.approx(1.25) and summary["sb_l0"][0] == pytest.approx(1.0)
    assert summary["sb_dead_latents"][0] == 0
