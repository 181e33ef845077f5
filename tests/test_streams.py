"""Counter-based streams: their numbers are uniform and independent, a draw's kernels do not grow with the
instances, and an instance's numbers are its own."""

import pytest
import torch
from scipy import stats
from torch.profiler import ProfilerActivity, profile

from device import DEVICE
from toysuper import DictionarySource, FeatureDistribution, Hierarchy, LowRankCorrelation, instance_generators
from toysuper.streams import Streams, as_streams, positions

N = 200_000


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def test_uniforms_are_uniform_and_independent_across_instances_steps_and_positions():
    streams = instance_generators(11, DEVICE, n_instances=4)
    first, second = (streams.uniform(positions(N, device=DEVICE)).cpu() for _ in range(2))
    assert first.shape == (4, N) and first.min() >= 0 and first.max() < 1
    tolerance = 5 / N ** 0.5  # five standard errors of a mean or a correlation
    for row in torch.cat([first, second]):
        assert abs(row.double().mean() - 0.5) < tolerance * 12 ** -0.5
        assert abs(row.double().var() - 1 / 12) < tolerance * 0.075
        assert stats.kstest(row.numpy(), "uniform").pvalue > 1e-4
    for i in range(3):
        assert abs(_corr(first[i], first[i + 1])) < tolerance  # across instances
        assert abs(_corr(first[i], second[i])) < tolerance  # across steps
        assert abs(_corr(first[i, 1:], first[i, :-1])) < tolerance  # across neighbouring positions
    # neighbouring pairs fill the unit square evenly (what Box–Muller and the Poisson events read)
    pair = streams.uniform(positions(N // 2, 2, device=DEVICE)).cpu()[0]
    assert abs(_corr(pair[:, 0], pair[:, 1])) < tolerance
    counts = torch.histc((pair[:, 0] * 8).floor() * 8 + (pair[:, 1] * 8).floor(), bins=64, min=0, max=63)
    assert stats.chisquare(counts.numpy()).pvalue > 1e-4


def test_normals_are_standard_normal():
    z = instance_generators(3, DEVICE, n_instances=2).normal(positions(N, device=DEVICE)).cpu()
    for row in z:
        assert abs(row.double().mean()) < 5 / N ** 0.5 and abs(row.double().var() - 1) < 5 * (2 / N) ** 0.5
        assert stats.kstest(row.numpy(), "norm").pvalue > 1e-4
    assert abs(_corr(z[0], z[1])) < 5 / N ** 0.5


def test_equal_seeds_equal_numbers_and_each_draw_moves_the_counter_on():
    a, b = instance_generators([5, 9], DEVICE), instance_generators([5, 9], DEVICE)
    where = positions(100, device=DEVICE)
    first = a.uniform(where)
    assert torch.equal(first, b.uniform(where)) and int(a.counter) == 1
    second = a.uniform(where)
    assert not torch.equal(first, second)
    # instance 1 alone, with the same seed, reads exactly its row of the batch: rows are pure
    assert torch.equal(instance_generators([9], DEVICE).uniform(where)[0], first[1])
    assert torch.equal(instance_generators([5, 9], DEVICE).uniform(where, torch.tensor([1], device=DEVICE)),
                       first[1:])
    # a view on some instances shares the counter: its draw is their rows of the batch's, and moves both on
    view, fresh = a.select([1]), instance_generators([5, 9], DEVICE)
    fresh.counter.fill_(2)
    assert torch.equal(view.uniform(where)[0], fresh.uniform(where)[1]) and int(a.counter) == 3
    # an empty draw still moves the counter, so what follows does not depend on whether it had rows
    c = instance_generators([5, 9], DEVICE)
    assert c.uniform(positions(0, device=DEVICE)).shape == (2, 0)
    assert torch.equal(c.uniform(where), second) and int(c.counter) == 2


def test_a_torch_generator_seeds_streams_once_per_call_and_bad_arguments_are_named():
    generator = torch.Generator(DEVICE).manual_seed(1)
    first = as_streams(generator, 3, torch.device(DEVICE)).keys
    assert len(first) == 3 and not torch.equal(first, as_streams(generator, 3, torch.device(DEVICE)).keys)
    assert isinstance(as_streams(None, 2, torch.device(DEVICE)), Streams)
    with pytest.raises(ValueError, match="Streams of 2 instances"):
        as_streams(instance_generators(0, DEVICE, n_instances=2), 3, torch.device(DEVICE))
    with pytest.raises(TypeError, match="generator must be"):
        as_streams(3.5, 1, torch.device(DEVICE))


def _op_count(call) -> int:
    call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    # (aten::fill_ left out: torch zero-fills a large allocation with one more kernel than a small one)
    return sum(1 for event in prof.events() if event.name.startswith("aten::") and event.name != "aten::fill_")


@pytest.mark.parametrize("kind", ["toy", "structured", "noisy source"])
def test_a_draws_kernel_count_does_not_grow_with_the_instances(kind):
    def make(n):
        if kind == "toy":
            return FeatureDistribution.sparsity_sweep(20, [0.9, 0.5] * (n // 2) or [0.9], device=DEVICE).sample
        if kind == "structured":
            return FeatureDistribution(30, 0.1, n_instances=n, hierarchy=Hierarchy.regular(2, 3),
                                       correlation=LowRankCorrelation(3), device=DEVICE).sample
        dist = FeatureDistribution(50, 0.05, n_instances=n, device=DEVICE)
        return DictionarySource(torch.randn(n, 50, 8, device=DEVICE), dist, noise=0.1).sample_hidden

    counts = {}
    for n in (2, 256):
        sample, streams = make(n), instance_generators(0, DEVICE, n_instances=n)
        counts[n] = _op_count(lambda: sample(128, streams))
    assert counts[2] == counts[256]
