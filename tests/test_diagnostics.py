"""Every diagnostic on a planted case that shows it and one that does not.

The data are planted here from tensors (orthonormal true directions, a hand-written feature
sampler with an optional hierarchy) and the SAEs are planted as tensors + encode callables,
so each expected value follows from the construction.
"""

import numpy as np
import pytest
import torch

from toysuper import Batch, DictionarySource, FeatureDistribution, TensorSAE, Thresholds, evaluate
from toysuper.grade.diagnostics import parent_index
from device import DEVICE

N_SAMPLES = 20_000


class _Dist:
    """What the grader may read from a distribution: firing probabilities and the hierarchy."""

    def __init__(self, firing_prob, parent=None):
        self.firing_prob = firing_prob
        if parent is not None:
            self.parent = parent


class PlantedSource:
    """h = f G with orthonormal G (standard basis rows); f: feature i fires with probability p_i
    (a child: with probability p_i given that its parent fires, never otherwise), magnitude U[0, 1]."""

    def __init__(self, prob, d_hidden=None, parent=None, expose_hierarchy=False):
        self.prob = torch.as_tensor(prob, dtype=torch.float32)
        self.n_features = len(self.prob)
        self.d_hidden = d_hidden or self.n_features
        self.n_instances, self.device = 1, torch.device(DEVICE)
        self.parent = torch.full((self.n_features,), -1) if parent is None else torch.as_tensor(parent)
        self.G = torch.eye(self.d_hidden)[: self.n_features]
        marginal = self.prob.clone()
        for child in (self.parent >= 0).nonzero().squeeze(-1).tolist():
            marginal[child] = self.prob[child] * self.prob[self.parent[child]]
        self.dist = _Dist(marginal[None], self.parent[None] if expose_hierarchy else None)

    def sample(self, batch_size, generator=None):
        fires = torch.rand(batch_size, self.n_features, generator=generator) < self.prob
        has_parent = self.parent >= 0
        fires[:, has_parent] &= fires[:, self.parent[has_parent]]
        f = torch.rand(batch_size, self.n_features, generator=generator) * fires
        return Batch((f @ self.G)[:, None], f[:, None])

    def true_directions(self):
        return self.G[None]

    def gradeable(self):
        return torch.ones(1, self.n_features, dtype=torch.bool)


def _read(x, source):
    """The true feature values behind x (orthonormal directions)."""
    return x @ source.G.T


def _exact_sae(source):
    """Latent i = feature i, decoder = the truth."""
    return TensorSAE(source.G.clone(), lambda x: _read(x, source), lambda a: a @ source.G)


def _unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def test_exact_sae_has_no_failures():
    source = PlantedSource([0.05] * 6, d_hidden=8, parent=[-1, 0, 0, -1, -1, -1])
    report = evaluate(_exact_sae(source), source, n_samples=N_SAMPLES, hierarchy={0: [1, 2]})
    summary = report.summary.iloc[0]
    assert summary["recovered@0.9"] == 1 and summary["f1"] == pytest.approx(1.0)
    assert summary["precision"] == pytest.approx(1.0) and summary["recall"] == pytest.approx(1.0)
    for name in ("split_fraction", "absorption", "dead_fraction", "dense_fraction", "mixed_fraction",
                 "unmatched_latent_fraction"):
        assert summary[name] == 0, name
    assert report.features["absorption"][0] == 0 and report.features["parent_miss"][0] == 0
    assert np.isnan(report.features["absorption"][1:]).all()  # only a parent has an absorption rate
    text = report.explain()
    for word in ("splitting", "absorption", "composition", "dead", "dense", "nothing"):
        assert word not in text


def test_precision_recall_f1_of_a_latent_that_fires_too_often_or_too_rarely():
    p = 0.08
    source = PlantedSource([p] * 3)

    def encode(x):
        f = _read(x, source)
        eager = torch.ones_like(f[:, 0])  # fires on every sample: precision = p, recall 1
        shy = torch.where(f[:, 1] > 0.5, f[:, 1], 0.0)  # fires on the upper half of magnitudes: recall 1/2
        return torch.stack([eager, shy, f[:, 2]], -1)

    report = evaluate(TensorSAE(source.G.clone(), encode), source, n_samples=N_SAMPLES)
    features = report.features
    assert features["precision"][0] == pytest.approx(p, abs=0.015) and features["recall"][0] == 1
    assert features["f1"][0] == pytest.approx(2 * p / (1 + p), abs=0.02)
    assert features["precision"][1] == 1 and features["recall"][1] == pytest.approx(0.5, abs=0.03)
    assert features["f1"][1] == pytest.approx(2 / 3, abs=0.03)
    assert features["precision"][2] == features["recall"][2] == features["f1"][2] == 1
    assert report.latents["dense"].tolist() == [True, False, False]  # fires on 100% > 10% of samples
    assert np.isnan(report.summary["mse"][0])  # no decode given: no reconstruction scores


def test_splitting_two_latents_share_one_feature():
    source = PlantedSource([0.1] * 4, d_hidden=6)
    tilt = torch.zeros(6)
    tilt[5] = 0.3
    decoder = torch.cat([source.G, _unit(source.G[0] + tilt)[None]])  # latent 4 is a second copy of feature 0

    def encode(x):
        f = _read(x, source)
        low, high = torch.where(f[:, 0] < 0.5, f[:, 0], 0.0), torch.where(f[:, 0] >= 0.5, f[:, 0], 0.0)
        return torch.cat([low[:, None], f[:, 1:], high[:, None]], -1)  # the two split by magnitude

    report = evaluate(TensorSAE(decoder, encode), source, n_samples=N_SAMPLES)
    features = report.features
    assert features["split"].tolist() == [True, False, False, False]
    assert features["n_near_latents"].tolist() == [2, 1, 1, 1]
    assert sorted(report.latents.query("near_feature == 0")["latent"]) == [0, 4]
    assert report.summary["split_fraction"][0] == 0.25
    assert features["recall"][0] == pytest.approx(0.5, abs=0.03)  # the matched half misses the other half
    assert "splitting: feature 0 is covered by 2 latents (0, 4)" in report.explain()


def _hierarchy_source(expose=False):
    # feature 0 is the parent of 1 and 2; feature 3 is independent.
    return PlantedSource([0.3, 0.5, 0.5, 0.2], d_hidden=5, parent=[-1, 0, 0, -1], expose_hierarchy=expose)


def _hierarchy_sae(source, absorbing_children, lean=True, G=None):
    """The parent's latent stays silent when an absorbing child fires; an absorbing child's latent
    then carries the parent's direction (decoder = child + parent) when `lean`."""
    G = source.G if G is None else G
    decoder = G.clone()
    for child in absorbing_children:
        if lean:
            decoder[child] = _unit(G[child] + G[0])

    def encode(x):
        f = x @ G.T
        acts = f.clone()
        for child in absorbing_children:
            acts[:, 0] = torch.where(f[:, child] > 0, 0.0, acts[:, 0])
        return acts

    return TensorSAE(decoder, encode)


def test_absorption_the_children_take_the_parent():
    source = _hierarchy_source()
    report = evaluate(_hierarchy_sae(source, [1, 2]), source, n_samples=N_SAMPLES, hierarchy={0: [1, 2]})
    features = report.features
    assert features["absorption"][0] == 1 and features["parent_miss"][0] == 1
    assert np.isnan(features["absorption"][3])  # no children
    assert report.summary["absorption"][0] == 1
    # the absorbed parent's latent fires only when no child does: recall = P(no child | parent) = 0.25
    assert features["recall"][0] == pytest.approx(0.25, abs=0.03)
    assert "absorption: parent feature 0 is absorbed by its children's latents in 100%" in report.explain()


def test_absorption_by_one_child_only_counts_its_samples():
    source = _hierarchy_source()
    report = evaluate(_hierarchy_sae(source, [1]), source, n_samples=N_SAMPLES, hierarchy={0: [1, 2]})
    # among samples where some child fires (prob 3/4 given the parent), child 1 fires in 2/3
    assert report.features["absorption"][0] == pytest.approx(2 / 3, abs=0.03)


def test_a_silent_parent_without_a_leaning_child_is_a_miss_not_absorption():
    source = _hierarchy_source()
    report = evaluate(_hierarchy_sae(source, [1, 2], lean=False), source, n_samples=N_SAMPLES,
                      hierarchy={0: [1, 2]})
    assert report.features["parent_miss"][0] == 1 and report.features["absorption"][0] == 0


def test_absorption_reads_the_hierarchy_from_the_source_distribution():
    source = _hierarchy_source(expose=True)
    report = evaluate(_hierarchy_sae(source, [1, 2]), source, n_samples=N_SAMPLES)
    assert report.features["parent"].tolist() == [-1, 0, 0, -1]
    assert report.features["absorption"][0] == 1
    no_hierarchy = evaluate(_hierarchy_sae(source, [1, 2]), PlantedSource([0.3, 0.5, 0.5, 0.2], d_hidden=5),
                            n_samples=2000)
    assert np.isnan(no_hierarchy.summary["absorption"][0])


def test_absorption_reads_a_feature_distribution_hierarchy():
    dist = FeatureDistribution(4, [0.3, 0.15, 0.15, 0.2], hierarchy={0: [1, 2]}, device=DEVICE)
    G = torch.eye(5)[:4]
    source = DictionarySource(G, dist)
    report = evaluate(_hierarchy_sae(None, [1, 2], G=G), source, n_samples=N_SAMPLES)
    assert report.features["parent"].tolist() == [-1, 0, 0, -1]
    assert report.features["firing_prob"].tolist() == pytest.approx([0.3, 0.15, 0.15, 0.2])
    assert report.features["absorption"][0] == 1 and report.summary["absorption"][0] == 1


def test_composition_a_latent_mixing_two_or_three_features():
    source = PlantedSource([0.1] * 6, d_hidden=8)
    decoder = torch.cat([source.G, _unit(source.G[0] + source.G[1])[None],
                         _unit(source.G[2] + source.G[3] + source.G[4])[None],
                         _unit(source.G[5] + 0.3 * source.G[0])[None]])  # near feature 5 alone: no mix

    def encode(x):
        f = _read(x, source)
        return torch.cat([f, (f[:, 0] + f[:, 1])[:, None], f[:, 2:5].sum(-1, keepdim=True), f[:, 5:6]], -1)

    report = evaluate(TensorSAE(decoder, encode), source, n_samples=5000)
    latents = report.latents.set_index("latent")
    assert set(latents["composed_of"][6].split("+")) == {"0", "1"}
    assert set(latents["composed_of"][7].split("+")) == {"2", "3", "4"}
    assert latents["composition_cos"][6] == pytest.approx(1.0, abs=1e-5)
    assert (latents["composed_of"].drop([6, 7]) == "").all()
    assert report.summary["mixed_fraction"][0] == pytest.approx(2 / 9)
    assert not latents["matched_to_nothing"].any()


def test_composition_needs_positive_parts_and_a_poor_single_fit():
    source = PlantedSource([0.1] * 3, d_hidden=6)
    decoder = torch.stack([_unit(source.G[0] - source.G[1]), _unit(source.G[0] + 0.2 * source.G[1]),
                           _unit(source.G[0] + source.G[1] + 1.5 * torch.eye(6)[5])])
    report = evaluate(TensorSAE(decoder, lambda x: _read(x, source) + 0.01), source, n_samples=2000)
    # a difference, a near-single direction and a sum far out of the features' span are no compositions
    assert (report.latents["composed_of"] == "").all()


def test_dead_dense_and_matched_to_nothing_latents():
    source = PlantedSource([0.05] * 3, d_hidden=5)
    decoder = torch.cat([source.G, torch.eye(5)[3:5]])  # latents 3, 4 point where no feature lives

    def encode(x):
        f = _read(x, source)
        orphan = f[:, 0]  # fires with feature 0 but writes along an unused direction
        dead = torch.zeros_like(orphan)
        return torch.cat([f[:, :2], torch.ones_like(f[:, 2:3]), orphan[:, None], dead[:, None]], -1)

    report = evaluate(TensorSAE(decoder, encode), source, n_samples=5000)
    latents = report.latents
    assert latents["dead"].tolist() == [False, False, False, False, True]
    assert latents["dense"].tolist() == [False, False, True, False, False]
    assert latents["matched_to_nothing"].tolist() == [False, False, False, True, False]
    summary = report.summary.iloc[0]
    assert (summary["dead_fraction"], summary["dense_fraction"], summary["unmatched_latent_fraction"]) == (0.2,) * 3
    text = report.explain()
    assert "dead latents: 4" in text and "latents matched to nothing: 3" in text and "dense latents" in text


def test_recovery_against_frequency_shows_which_frequencies_are_resolved():
    prob = [0.3, 0.3, 0.1, 0.1, 0.03, 0.03, 0.01, 0.01, 0.003, 0.003]
    source = PlantedSource(prob, d_hidden=16)
    frequent = torch.tensor(prob) >= 0.03
    decoder = torch.where(frequent[:, None], source.G, torch.eye(16)[6:16])  # rare ones: wrong directions
    report = evaluate(TensorSAE(decoder, lambda x: x @ decoder.T), source, n_samples=5000)
    table = report.recovery_by_frequency(bins=[0.001, 0.02, 1.0])
    assert table["frequency_source"][0] == "firing_prob"
    assert table["n_features"].tolist() == [4, 6] and table["recovered"].tolist() == [0.0, 1.0]
    flat = evaluate(_exact_sae(source), source, n_samples=5000).recovery_by_frequency()
    assert (flat["recovered"] == 1).all() and flat["n_features"].sum() == 10
    assert (flat["freq_low"].diff().dropna() > 0).all()  # log-spaced bins, rarest first


def test_thresholds_and_hierarchy_are_checked():
    with pytest.raises(ValueError, match="split"):
        Thresholds(split=1.5)
    with pytest.raises(ValueError, match="max_parts"):
        Thresholds(max_parts=1)
    with pytest.raises(ValueError, match="parent 9"):
        parent_index({9: [1]}, 1, 4)
    with pytest.raises(ValueError, match="two parents"):
        parent_index({0: [2], 1: [2]}, 1, 4)
    with pytest.raises(ValueError, match="own parent"):
        parent_index([-1, 1, -1], 1, 3)
    with pytest.raises(ValueError, match="shape"):
        parent_index(torch.tensor([-1, 0]), 1, 3)
    assert parent_index({0: [1, 2]}, 2, 3).tolist() == [[-1, 0, 0]] * 2
    source = PlantedSource([0.1] * 3)
    with pytest.raises(TypeError, match="thresholds"):
        evaluate(_exact_sae(source), source, thresholds={"split": 0.5})
