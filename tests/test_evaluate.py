import itertools

import numpy as np
import pytest
import torch

from toysuper import SAE, DictionarySource, FeatureDistribution, evaluate, hungarian, mmcs, recovered
from toysuper.grade.matching import cosine_matrix


def _orthonormal(n, d, seed=0):
    """(n, d) orthonormal rows: signed standard basis vectors, so encoding them is exact in floats."""
    generator = torch.Generator(DEVICE).manual_seed(seed)
    dims = torch.randperm(d, generator=generator)[:n]
    signs = torch.randint(0, 2, (n,), generator=generator) * 2.0 - 1
    return torch.eye(d)[dims] * signs[:, None]


def _planted_sae(decoder_rows: torch.Tensor) -> SAE:
    """An SAE whose decoder rows are given and whose encoder is their transpose."""
    k, d = decoder_rows.shape
    sae = SAE(d, k, device=DEVICE)
    with torch.no_grad():
        sae.W_dec.copy_(decoder_rows.unsqueeze(0))
        sae.W_enc.copy_(decoder_rows.T.unsqueeze(0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def test_permuted_copy_of_the_truth_is_recovered_exactly():
    truth = _orthonormal(8, 16)
    perm = torch.randperm(8, generator=torch.Generator(DEVICE).manual_seed(3))
    source = DictionarySource(truth, FeatureDistribution(8, 0.3, device=DEVICE))
    report = evaluate(_planted_sae(truth[perm]), source, n_samples=5000)
    summary = report.summary.iloc[0]
    assert summary["mmcs"] == pytest.approx(1.0, abs=1e-6)
    assert summary["hungarian_cos"] == pytest.approx(1.0, abs=1e-6)
    assert summary["recovered@0.9"] == 1.0
    assert summary["activation_mcc"] == pytest.approx(1.0, abs=1e-6)
    assert summary["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert summary["l0"] == pytest.approx(8 * 0.3, abs=0.1)
    assert summary["dead_fraction"] == 0.0
    # latent j holds feature perm[j]: feature i is matched to latent perm⁻¹[i]
    assert report.features["matched_latent"].tolist() == torch.argsort(perm).tolist()


def test_noised_copy_keeps_the_right_matching_and_lower_cosines():
    truth = _orthonormal(8, 16, seed=1)
    perm = torch.randperm(8, generator=torch.Generator(DEVICE).manual_seed(4))
    noisy = truth[perm] + 0.2 * torch.randn(8, 16, generator=torch.Generator(DEVICE).manual_seed(5))
    source = DictionarySource(truth, FeatureDistribution(8, 0.3, device=DEVICE))
    report = evaluate(_planted_sae(noisy), source, n_samples=2000)
    expected = torch.nn.functional.cosine_similarity(truth, noisy[torch.argsort(perm)], dim=-1)
    assert report.features["matched_latent"].tolist() == torch.argsort(perm).tolist()
    assert np.allclose(report.features["matched_cos"], expected.numpy(), atol=1e-5)
    assert report.summary["hungarian_cos"][0] == pytest.approx(expected.mean().item(), abs=1e-5)
    assert report.summary["recovered@0.9"][0] == pytest.approx((expected >= 0.9).float().mean().item())
    assert report.summary["fvu"][0] > 0.01  # a noised decoder no longer reconstructs exactly


def test_dictionary_narrower_than_the_truth():
    truth = _orthonormal(8, 16, seed=2)
    source = DictionarySource(truth, FeatureDistribution(8, 0.3, device=DEVICE))
    report = evaluate(_planted_sae(truth[:5]), source, n_samples=2000)
    features = report.features
    assert (features["matched_latent"][:5] == np.arange(5)).all()
    assert (features["matched_latent"][5:] == -1).all() and (features["matched_cos"][5:] == 0).all()
    assert (features["activation_corr"][5:] == 0).all()
    assert report.summary["recovered@0.9"][0] == pytest.approx(5 / 8)
    assert report.summary["hungarian_cos"][0] == pytest.approx(5 / 8, abs=1e-6)
    # MMCS still finds each missing feature's best (orthogonal, so ~0) latent
    assert report.summary["mmcs"][0] == pytest.approx(5 / 8, abs=1e-6)


def _brute_force_best(C):
    n, k = C.shape
    if n <= k:
        return max(sum(C[i, cols[i]] for i in range(n)) for cols in itertools.permutations(range(k), n))
    return max(sum(C[rows[j], j] for j in range(k)) for rows in itertools.permutations(range(n), k))


@pytest.mark.parametrize("n, k", [(4, 4), (4, 6), (5, 3), (6, 6)])
def test_hungarian_matches_brute_force(n, k):
    rng = np.random.default_rng(n * 10 + k)
    for _ in range(5):
        C = rng.uniform(-1, 1, size=(n, k))
        assignment = hungarian(C)
        assert assignment.cosine.sum() == pytest.approx(_brute_force_best(C))
        matched = assignment.latent[assignment.latent >= 0]
        assert len(set(matched.tolist())) == len(matched) == min(n, k)  # one-to-one


def test_metric_formulas_on_a_hand_made_cosine_matrix():
    C = torch.tensor([[0.9, 0.95], [0.2, 0.1], [0.8, 0.3]])
    assert mmcs(C) == pytest.approx((0.95 + 0.2 + 0.8) / 3)
    assert recovered(np.array([0.95, 0.5, 0.9]), 0.9) == pytest.approx(2 / 3)
    G = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    D = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])
    assert torch.allclose(cosine_matrix(G, D), torch.tensor([[[1.0, 2 ** -0.5], [0.0, 2 ** -0.5]]]))


def test_evaluate_rejects_mismatched_shapes_and_bad_threshold():
    source = DictionarySource(_orthonormal(4, 8), FeatureDistribution(4, 0.3, device=DEVICE))
    with pytest.raises(ValueError, match="d_hidden"):
        evaluate(SAE(6, 4, device=DEVICE), source)
    with pytest.raises(ValueError, match="threshold"):
        evaluate(SAE(8, 4, device=DEVICE), source, threshold=1.5)


# --- matching at scale: chunked cosines and the sparse candidate matching ---------------------

from toysuper.grade.matching import candidate_edges, cosine_tops, match  # noqa: E402
from device import DEVICE


def test_cosine_tops_in_chunks_equal_the_full_matrix():
    generator = torch.Generator(DEVICE).manual_seed(0)
    G, D = torch.randn(2, 30, 8, generator=generator), torch.randn(2, 50, 8, generator=generator)
    mask = torch.rand(2, 30, generator=generator) > 0.3
    tops = cosine_tops(G, D, mask, per_row=5, per_col=3, chunk_entries=2 * 7 * 50)  # 7 rows per chunk
    C = cosine_matrix(G, D)
    values, index = C.topk(5, dim=-1)
    assert torch.allclose(tops.row_cos, values, atol=1e-6) and torch.equal(tops.row_latent, index)
    values, index = C.masked_fill(~mask[..., None], -torch.inf).topk(3, dim=1)
    assert torch.allclose(tops.col_cos, values.transpose(1, 2), atol=1e-6)
    assert torch.equal(tops.col_feature, index.transpose(1, 2))


def _sae_like(n, k, d, noise, seed):
    """Truth G and a decoder holding a noised copy of min(n, k) true directions plus random rows."""
    generator = torch.Generator(DEVICE).manual_seed(seed)
    G = torch.randn(n, d, generator=generator)
    copies = G[torch.randperm(n, generator=generator)[: min(n, k)]]
    D = torch.cat([copies + noise * torch.randn(copies.shape, generator=generator),
                   torch.randn(max(0, k - n), d, generator=generator)])
    return G, D[torch.randperm(k, generator=generator)]


@pytest.mark.parametrize("n, k, d, noise", [(300, 1200, 64, 0.3), (400, 400, 48, 0.5), (500, 150, 32, 0.2),
                                            (200, 600, 16, 3.0)])  # the last: latents barely related to features
def test_sparse_matching_equals_the_exact_hungarian(n, k, d, noise):
    G, D = _sae_like(n, k, d, noise, seed=n + k)
    exact, sparse = match(G, D, "exact"), match(G, D, "sparse")
    assert (exact.method, sparse.method) == ("exact", "sparse")
    assert np.array_equal(sparse.assignment.latent, exact.assignment.latent)
    assert np.allclose(sparse.assignment.cosine, exact.assignment.cosine, atol=1e-9)


def test_sparse_matching_rematches_features_whose_candidates_were_taken():
    # 40 features whose only candidate is the same latent: 39 are left over and must be
    # matched again among the unused latents (with fresh candidates, then exactly).
    generator = torch.Generator(DEVICE).manual_seed(7)
    common = torch.randn(1, 12, generator=generator)
    G = common + 0.3 * torch.randn(40, 12, generator=generator)
    D = torch.cat([common, torch.randn(99, 12, generator=generator)])
    C = cosine_matrix(G, D)
    best = C.argmax(-1).numpy()
    assert (best == 0).all()
    edges = (np.arange(40), best, C[np.arange(40), best].double().numpy())
    exact = match(G, D, "exact")
    sparse = match(G, D, "sparse", candidates=2, exact_limit=500, edges=edges)
    matched = sparse.assignment.latent
    assert (matched >= 0).all() and len(set(matched.tolist())) == 40  # everyone got a latent, one to one
    assert np.allclose(sparse.assignment.cosine, C[np.arange(40), matched].double().numpy(), atol=1e-6)
    assert sparse.assignment.cosine.sum() == pytest.approx(exact.assignment.cosine.sum(), rel=0.02)


def test_candidate_edges_renumber_the_graded_rows():
    G, D = _sae_like(6, 9, 5, 0.1, seed=3)
    tops = cosine_tops(G[None], D[None], per_row=2, per_col=1)
    rows = np.array([1, 3, 4])
    feature, latent, cos = candidate_edges(tops, 0, rows)
    assert set(feature.tolist()) <= {0, 1, 2}
    assert np.allclose(cos, cosine_matrix(G, D)[rows[feature], latent].numpy(), atol=1e-6)


def test_evaluate_reports_the_matching_it_used_and_sparse_grades_like_exact():
    truth = _orthonormal(12, 24, seed=4)
    noisy = torch.cat([truth + 0.15 * torch.randn(12, 24, generator=torch.Generator(DEVICE).manual_seed(8)),
                       torch.randn(20, 24, generator=torch.Generator(DEVICE).manual_seed(9))])
    source = DictionarySource(truth, FeatureDistribution(12, 0.05, device=DEVICE))
    sae = _planted_sae(noisy)
    exact = evaluate(sae, source, n_samples=2000, matching="exact")
    sparse = evaluate(sae, source, n_samples=2000, matching="sparse", candidates=3)
    auto_small = evaluate(sae, source, n_samples=2000)
    auto_large = evaluate(sae, source, n_samples=2000, exact_limit=10)
    assert exact.summary["matching"][0] == auto_small.summary["matching"][0] == "exact"
    assert sparse.summary["matching"][0] == auto_large.summary["matching"][0] == "sparse"
    assert exact.features["matched_latent"].tolist() == sparse.features["matched_latent"].tolist()
    assert np.allclose(exact.features["matched_cos"], sparse.features["matched_cos"])
    with pytest.raises(ValueError, match="matching"):
        evaluate(sae, source, matching="greedy")


def test_per_instance_seeds_grade_an_instance_alike_alone_and_in_a_batch():
    """evaluate(seed=[one per instance]) draws instance i's held-out samples from seed i alone, in chunks whose
    size does not depend on the other instances (needs the per-instance draws of FeatureDistribution)."""
    from toysuper import random_directions

    directions = random_directions(12, 6, n_instances=3, seed=1, device=DEVICE)
    firing = torch.tensor([[0.1], [0.2], [0.3]])
    sae = SAE(6, 16, n_instances=3, seed=[4, 5, 6], device=DEVICE)
    source = DictionarySource(directions, FeatureDistribution(12, firing, n_instances=3, device=DEVICE))
    together = evaluate(sae, source, n_samples=3000, batch_size=1000, seed=[7, 8, 9])
    for i in range(3):
        alone = SAE(6, 16, seed=[4 + i], device=DEVICE)
        alone.load_state_dict({k: v[i:i + 1] if v.ndim else v for k, v in sae.state_dict().items()})
        one = DictionarySource(directions[i:i + 1], FeatureDistribution(12, firing[i:i + 1], device=DEVICE))
        report = evaluate(alone, one, n_samples=3000, batch_size=1000, seed=[7 + i])
        for column in ("mmcs", "activation_mcc", "mse", "l0", "f1"):
            assert report.summary[column].iloc[0] == pytest.approx(together.summary[column].iloc[i], rel=1e-6)
    with pytest.raises(ValueError, match="one int per instance"):
        evaluate(sae, source, n_samples=100, seed=[1, 2])
