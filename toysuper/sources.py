"""Activation sources: hidden activations paired with the truth that made them.

Every source yields `Batch(hidden, features)` with hidden (batch, inst, d_hidden) and
features (batch, inst, n_features), and knows the true unit directions of its features
in hidden space, (inst, n_features, d_hidden), and which features are gradeable.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from .checks import finite_float, finite_tensor, non_negative, positive_int
from .devices import instance_generators, resolve_device
from .streams import Streams, as_streams, positions
from .toy.model import ToyModel, check_dist
from .truth.dictionaries import Dictionary, unit_rows
from .truth.distribution import Draw, FeatureDistribution, Numbers
from .truth.poisson import row_starts, rows_and_features

SNR_SAMPLES = 65_536  # samples behind the signal power that sets the noise for a stated SNR


class Batch(NamedTuple):
    """One draw from a source."""

    hidden: torch.Tensor
    """Hidden activations the SAE sees, (batch, inst, d_hidden)."""
    features: torch.Tensor
    """Ground-truth feature activations behind them, (batch, inst, n_features)."""


@runtime_checkable
class ActivationSource(Protocol):
    """What an SAE trainer and the evaluator need from a source.

    Optional: `sample_hidden(batch_size, generator)`, the activations alone (`train_sae` uses it when present),
    and `capturable = True` for a draw a CUDA graph can record (else a `capture_reason`, toysuper/capture.py).
    """

    n_instances: int
    n_features: int
    d_hidden: int
    device: torch.device

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch: ...

    def true_directions(self) -> torch.Tensor:
        """Unit directions, (inst, n_features, d_hidden)."""

    def gradeable(self) -> torch.Tensor:
        """Boolean (inst, n_features): features that have a direction to find."""


def _noise_std_for_snr(source, snr, snr_samples) -> torch.Tensor:
    """σ of isotropic noise N(0, σ² I_d) whose power d σ² is the source's signal power over `snr`, (inst,)."""
    snr = finite_float("snr", snr)
    if snr <= 0:
        raise ValueError(f"snr must be > 0 (a power ratio; snr_db = 10 log10(snr)), got {snr!r}")
    power = source.signal_power(positive_int("snr_samples", snr_samples))
    return (power / (source.d_hidden * snr)).sqrt()


@torch.no_grad()
def _mean_power(draw, source, n_samples: int, seed: int, chunk: int = 8192) -> torch.Tensor:
    """E||s||² per instance, (inst,), over `n_samples` draws of `draw(size, generator) -> (inst, size, d)`; every
    instance reads its own stream seeded `seed`, so its estimate does not depend on the other instances."""
    generator = instance_generators([seed] * source.n_instances, source.device)
    total = 0.0
    for done in range(0, n_samples, chunk):
        total = total + draw(min(chunk, n_samples - done), generator).pow(2).sum(-1).sum(1)
    return total / n_samples


def hidden_from_draw(drawn: Draw, directions: torch.Tensor, slot_directions: torch.Tensor,
                     sparse_slots: bool = False) -> torch.Tensor:
    """h = f D from a draw, (inst, batch, d_hidden), with fixed shapes and no host sync.

    directions: (inst, n_features, d_hidden); slot_directions: the rows of the draw's dense slots,
    (D, m, d_hidden). The dense slots go through one batched matmul; the Poisson events through one
    embedding_bag per (instance, sample) bag, bounded by the events' rows (they arrive in order; a spare
    bag past the batch takes the unused slots). sparse_slots: eagerly on a CPU, the dense slots' product
    is a sum over their non-zero entries alone (for slots that rarely fire, as in SynthSAEBench).
    """
    n_instances, n_features, d_hidden = directions.shape
    n_dense, batch_size, n_slots = drawn.slots.shape
    n_event_rows, n_events = drawn.place.shape
    parts = []
    if n_slots:
        sparse_slots = sparse_slots and drawn.slots.device.type == "cpu" and not torch.compiler.is_compiling()
        parts.append((drawn.dense_instances, _sparse_product(drawn.slots, slot_directions) if sparse_slots
                      else torch.bmm(drawn.slots, slot_directions)))
    if n_events:
        row, feature = rows_and_features(drawn.place, n_features)
        start, _ = row_starts(row, batch_size)  # (E, batch + 1): the last bag takes the unused slots
        if n_instances > 1:  # the instance's rows of the flattened table, and its bags' bounds
            feature = feature + drawn.event_instances[:, None] * n_features
            start = start + torch.arange(n_event_rows, device=start.device)[:, None] * n_events
        bags = torch.nn.functional.embedding_bag(
            feature.flatten(), directions.reshape(-1, d_hidden), start.flatten(), mode="sum",
            per_sample_weights=drawn.value.flatten())
        parts.append((drawn.event_instances, bags.view(n_event_rows, batch_size + 1, d_hidden)[:, :batch_size]))
    if len(parts) == 1 and parts[0][1].shape[0] == n_instances:
        return parts[0][1]  # one part covering every instance (rows in order)
    hidden = directions.new_zeros(n_instances, batch_size, d_hidden)
    for rows, part in parts:
        hidden.index_add_(0, rows, part)  # rows are distinct: each entry gets one addition
    return hidden


def _sparse_product(slots: torch.Tensor, slot_directions: torch.Tensor) -> torch.Tensor:
    """torch.bmm(slots, slot_directions), (D, batch, d_hidden), as one embedding_bag over slots' non-zero entries."""
    n_rows, batch_size, n_slots = slots.shape
    slot_major = slots.transpose(1, 2).is_contiguous()  # (the structured layout stores slots (D, m, batch))
    flat = (slots.transpose(1, 2) if slot_major else slots).reshape(-1)
    where = flat.nonzero().squeeze(1)
    if slot_major:
        row_slot, sample = torch.div(where, batch_size, rounding_mode="floor"), where.remainder(batch_size)
        bag = torch.div(row_slot, n_slots, rounding_mode="floor") * batch_size + sample
    else:
        bag = torch.div(where, n_slots, rounding_mode="floor")
        row_slot = torch.div(bag, batch_size, rounding_mode="floor") * n_slots + where.remainder(n_slots)
    bag, order = bag.sort(stable=True)  # embedding_bag's bags are runs of consecutive entries
    counts = torch.bincount(bag, minlength=n_rows * batch_size)
    sums = torch.nn.functional.embedding_bag(row_slot[order], slot_directions.reshape(n_rows * n_slots, -1),
                                             counts.cumsum(0).sub_(counts), mode="sum",
                                             per_sample_weights=flat[where[order]])
    return sums.view(n_rows, batch_size, -1)


class SourceNumbers(NamedTuple):
    """The random numbers of one batch of a source: the features', then the noise's."""

    features: Numbers
    noise: torch.Tensor
    """(inst, batch, d_hidden) standard normals; an empty tensor for a noiseless source."""


class _DrawnSource:
    """A source whose batch is random numbers (`numbers`) and a pure transform of them (`transform`), with fixed
    shapes and no host sync, which training can capture on a GPU."""

    capturable = True

    def sample(self, batch_size: int, generator=None) -> Batch:
        """Hidden activations and the features behind them, each (batch, inst, ·); `generator` as in `numbers`."""
        return Batch(*self._batch(batch_size, generator, True))

    def sample_hidden(self, batch_size: int, generator=None) -> torch.Tensor:
        """`sample(...).hidden` (the same for the same generator state), (batch, inst, d_hidden)."""
        return self._batch(batch_size, generator, False)[0]

    def numbers(self, batch_size: int, generator=None) -> SourceNumbers:
        """The random numbers of one batch: the features', then (for a noisy source) the noise's.

        `generator`: `Streams` (`toysuper.instance_generators`; instance i's numbers from its stream alone),
        or None / a torch.Generator / a list of them, from which fresh streams are seeded (`as_streams`).
        """
        streams = as_streams(generator, self.n_instances, self.device)
        features = self.dist.numbers(batch_size, streams)
        # the noise's draw advances the streams even when empty: every instance's numbers stay its own
        noise = streams.normal(positions(batch_size if self._noisy else 0, self.d_hidden, device=self.device))
        return SourceNumbers(features, noise)


class DictionarySource(_DrawnSource):
    """h = f D + bias (+ Gaussian noise): features laid along fixed directions.

    Args:
        directions: (n_features, d_hidden), shared by all instances, or (inst, n_features, d_hidden), or a
            `Dictionary`. Used as given; their unit versions are the truth.
        dist: the feature distribution; its n_instances sets the source's.
        noise: standard deviation σ of isotropic Gaussian noise added in hidden space.
        snr: instead of `noise`, the signal-to-noise ratio per instance, as a power ratio
            SNR = E||f D||² / E||ε||² with ε ~ N(0, σ² I) (so E||ε||² = d_hidden σ²); 10 log10(SNR) in dB.
            E||f D||² is estimated on `snr_samples` draws with a fixed seed (relative error about
            CV(||f D||²) / sqrt(snr_samples)).
        bias: a fixed hidden-space offset, (d_hidden,) or (inst, d_hidden); not part of the signal for `snr`.

    Attributes:
        noise_std: σ of the added noise per instance, (inst,).
        bias: (inst, d_hidden) or None.
    """

    def __init__(self, directions: torch.Tensor, dist: FeatureDistribution, noise: float = 0.0, *, snr=None,
                 snr_samples: int = SNR_SAMPLES, bias=None):
        if isinstance(directions, Dictionary):
            directions = directions.directions
        directions = torch.as_tensor(directions, dtype=torch.float32)
        if directions.ndim == 2:
            directions = directions.unsqueeze(0).expand(dist.n_instances, -1, -1)
        if directions.ndim != 3 or directions.shape[:2] != (dist.n_instances, dist.n_features):
            raise ValueError(
                f"directions has shape {tuple(directions.shape)}; expected ({dist.n_features}, d_hidden) or "
                f"({dist.n_instances}, {dist.n_features}, d_hidden) to match dist"
            )
        finite_tensor("directions", directions)
        zero = directions.norm(dim=-1) == 0
        if zero.any():
            instance, feature = zero.nonzero()[0].tolist()
            raise ValueError(f"directions has a zero row (feature {feature}, instance {instance}; {int(zero.sum())} "
                             f"in all): every feature needs a direction to lie along")
        self.dist = dist
        self.device = dist.device
        self.directions = directions.to(self.device).contiguous()
        self.n_instances, self.n_features, self.d_hidden = self.directions.shape
        if dist.identity_slots:
            self._slot_directions = self.directions  # the direction of each of the draw's dense slots, (D, m, d)
        else:
            rows = self.directions.index_select(0, torch.as_tensor(dist.dense_instances, dtype=torch.long,
                                                                   device=self.device))
            self._slot_directions = rows.gather(1, dist.slot_feature[..., None].expand(-1, -1, self.d_hidden))
        slot_rates = dist.firing_prob[dist.dense_instances].gather(1, dist.slot_feature)
        self._sparse_slots = bool(slot_rates.numel()) and slot_rates.mean().item() < 1 / 32  # (then nonzeros are few)
        self.bias = None
        if bias is not None:
            bias = torch.as_tensor(bias, dtype=torch.float32)
            if bias.shape not in ((self.d_hidden,), (self.n_instances, self.d_hidden)):
                raise ValueError(f"bias has shape {tuple(bias.shape)}; expected ({self.d_hidden},) or "
                                 f"({self.n_instances}, {self.d_hidden})")
            self.bias = finite_tensor("bias", bias).expand(self.n_instances, self.d_hidden).to(self.device)
        self.noise = non_negative("noise", noise)
        self.snr = snr
        if snr is None:
            self.noise_std = torch.full((self.n_instances,), self.noise, device=self.device)
        elif self.noise > 0:
            raise ValueError(f"give noise (a standard deviation) or snr, not both: noise={noise!r}, snr={snr!r}")
        else:
            self.noise_std = _noise_std_for_snr(self, snr, snr_samples)
        self._noisy = bool((self.noise_std > 0).any())

    def transform(self, numbers: SourceNumbers) -> tuple[torch.Tensor, Draw]:
        """Numbers to (hidden (batch, inst, d_hidden), the draw): pure, fixed-shape, no host sync."""
        drawn = self.dist.transform(numbers.features)
        hidden = hidden_from_draw(drawn, self.directions, self._slot_directions, self._sparse_slots)
        if self.bias is not None:
            hidden = hidden + self.bias[:, None, :]
        if self._noisy:
            hidden = hidden + self.noise_std[:, None, None] * numbers.noise
        return hidden.transpose(0, 1), drawn

    def _batch(self, batch_size: int, generator, dense: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden, drawn = self.transform(self.numbers(batch_size, generator))
        self.dist.overflow.add_(drawn.overflow)
        return hidden, self.dist.to_dense(drawn) if dense else None  # (training needs no dense features)

    def signal_power(self, n_samples: int = SNR_SAMPLES, seed: int = 0) -> torch.Tensor:
        """E||f D||² per instance, (inst,), on `n_samples` noiseless draws without the bias (`_mean_power`)."""
        return _mean_power(lambda size, generator: hidden_from_draw(
            self.dist.draw(size, generator), self.directions, self._slot_directions), self, n_samples, seed)

    def true_directions(self) -> torch.Tensor:
        return unit_rows(self.directions)

    def gradeable(self) -> torch.Tensor:
        """Every feature with a non-zero direction and a chance to fire."""
        return (self.directions.norm(dim=-1) > 0) & (self.dist.firing_prob > 0)


class ToyModelSource(_DrawnSource):
    """Hidden activations of a trained toy model on fresh samples of its features.

    Args:
        model: a trained `ToyModel`.
        dist: the feature distribution (same n_features and n_instances as the model).
        instances: optional index per source instance into the model's instances, e.g. [0, 0, 1, 1] to let
            two SAEs each read the same toy model (each with its own draws of its features). Default: one to one.
        snr: optional signal-to-noise ratio of Gaussian noise added to the hidden activations, as for
            `DictionarySource` with the model's hidden vector h as the signal, per source instance.
        snr_samples: how many samples estimate E||h||².
    """

    def __init__(self, model: ToyModel, dist: FeatureDistribution, instances=None, *, snr=None,
                 snr_samples: int = SNR_SAMPLES):
        check_dist(model, dist)
        self.model = model
        self.device = model.W.device
        index = torch.arange(model.n_instances) if instances is None else torch.as_tensor(instances, dtype=torch.long)
        if index.ndim != 1 or len(index) == 0 or index.min() < 0 or index.max() >= model.n_instances:
            raise ValueError(f"instances must be a non-empty list of indices below {model.n_instances}, "
                             f"got {instances!r}")
        self.instances = index.to(self.device)
        self.dist = dist
        if not torch.equal(index, torch.arange(model.n_instances)):
            # source instance k draws its own features, with the settings of model instance instances[k]
            self.dist = dist.select(index.tolist(), self.device)
        elif dist.device != self.device:
            self.dist = dist.to(self.device)
        self.n_instances = len(self.instances)
        self.n_features, self.d_hidden = model.n_features, model.d_hidden
        self.snr = snr
        self._noisy = snr is not None
        self.noise_std = None if snr is None else _noise_std_for_snr(self, snr, snr_samples)  # σ, (inst,)

    def transform(self, numbers: SourceNumbers) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Numbers to (hidden (batch, inst, d_hidden), features (batch, inst, n_features), Poisson overflow
        (inst,)). Toy models have few features, so the dense features and one batched matmul are the cheap way."""
        drawn = self.dist.transform(numbers.features)
        features = self.dist.to_dense(drawn)
        hidden = self._hidden(features)
        if self._noisy:
            hidden = hidden + self.noise_std[:, None, None] * numbers.noise
        return hidden.transpose(0, 1), features, drawn.overflow

    def _hidden(self, features: torch.Tensor) -> torch.Tensor:
        """h = W x, ReLU'd for hidden_relu models: features (batch, inst, n) -> (inst, batch, d_hidden)."""
        hidden = torch.bmm(features.transpose(0, 1), self.model.W.detach()[self.instances])
        return torch.relu(hidden) if self.model.kind == "hidden_relu" else hidden

    def _batch(self, batch_size: int, generator, dense: bool) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, features, overflow = self.transform(self.numbers(batch_size, generator))
        self.dist.overflow.add_(overflow)
        return hidden, features

    def signal_power(self, n_samples: int = SNR_SAMPLES, seed: int = 0) -> torch.Tensor:
        """E||h||² per source instance, (inst,), on `n_samples` noiseless draws (`_mean_power`)."""
        return _mean_power(lambda size, generator: self._hidden(self.dist.sample(size, generator)),
                           self, n_samples, seed)

    def true_directions(self) -> torch.Tensor:
        return self.model.feature_directions()[self.instances]

    def gradeable(self) -> torch.Tensor:
        """The features the toy model represents (||W_i|| >= 0.5): a dropped one has no direction."""
        return self.model.represented()[self.instances] & (self.dist.firing_prob > 0)


class WorldFacts(NamedTuple):
    """What the grader may read about an outside world's features (as it reads `source.dist`)."""

    firing_prob: torch.Tensor | None
    """Marginal firing probability per feature, (inst, n_features), or None where not known."""
    parent: torch.Tensor | None
    """Parent feature per feature, (n_features,), -1 for none; None without a hierarchy."""


class SAELensWorld:
    """SAELens's synthetic world (`sae_lens.synthetic.SyntheticModel`) as a source: SynthSAEBench's data.

    Samples come from SAELens's own sampler and feature dictionary (h = f W + bias), so training and grading
    here see exactly the world SAELens builds (Chanin & Garriga-Alonso 2026, "SynthSAEBench", arXiv 2602.14687).

    Args:
        model: a `SyntheticModel`, or the directory it was saved to with `model.save(directory)`.
        n_instances: how many SAEs read this world; each instance gets its own samples.
        device: for a directory, where to load it; for a model, None or the device it lives on.

    Random streams: SAELens draws from torch's global generator. Given a `generator`, each draw takes a seed
    from it (a host read) and runs SAELens's sampler with torch's global generators (the CPU's and the world's
    GPU's) seeded with it, restoring them afterwards: same generator state, same samples. `Streams`, or a list
    of n_instances generators, give instance i its samples from its own stream alone; None draws from the
    global generator, as `SyntheticModel.sample_with_features` does.

    `dist` (`WorldFacts`) tells the grader the hierarchy as a parent per feature, and each feature's firing
    probability where it is known exactly (`_marginal_firing_prob`).
    """

    capturable = False
    capture_reason = "SAELensWorld reads a seed back to the host for each batch; its sampler's shapes depend on data"

    def __init__(self, model, n_instances: int = 1, *, device=None):
        try:
            from sae_lens.synthetic import SyntheticModel
        except ImportError as error:
            raise ImportError("SAELensWorld needs SAELens: pip install 'toysuper[saelens]'") from error
        if isinstance(model, (str, os.PathLike)):
            path = Path(model)
            if not (path / "synthetic_model_config.json").is_file():
                raise ValueError(f"model={str(model)!r} is not a directory saved by SyntheticModel.save "
                                 f"(no synthetic_model_config.json in it)")
            model = SyntheticModel.load_from_disk(path, device=str(resolve_device(device)))
        elif not isinstance(model, SyntheticModel):
            raise TypeError(f"model must be a sae_lens SyntheticModel or the directory it was saved to, "
                            f"got {type(model).__name__}")
        elif device is not None and resolve_device(device) != torch.device(model.device):
            raise ValueError(f"device={device!r} but the SyntheticModel lives on {model.device!r}; build or load it "
                             f"on the device you want (SyntheticModel.to rebuilds its sampler)")
        self.model = model
        self.device = torch.device(model.device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.n_instances = positive_int("n_instances", n_instances)
        self.n_features, self.d_hidden = model.cfg.num_features, model.cfg.hidden_dim
        firing_prob = _marginal_firing_prob(model)
        self.dist = WorldFacts(None if firing_prob is None else firing_prob.float().expand(self.n_instances, -1),
                               None if model.hierarchy is None else _parents(model.hierarchy, self.n_features))

    @torch.no_grad()
    def sample(self, batch_size: int, generator=None) -> Batch:
        batch_size = positive_int("batch_size", batch_size)
        if generator is None or isinstance(generator, torch.Generator):
            seed = None if generator is None else _seed_from(generator)
            hidden, features = self._draw(batch_size * self.n_instances, seed)
            return Batch(hidden.view(batch_size, self.n_instances, -1), features.view(batch_size, self.n_instances, -1))
        if isinstance(generator, Streams):
            seeds = as_streams(generator, self.n_instances, self.device).integers().tolist()  # host read
        elif isinstance(generator, (list, tuple)) and len(generator) == self.n_instances \
                and all(isinstance(g, torch.Generator) for g in generator):
            seeds = [_seed_from(g) for g in generator]
        else:
            raise TypeError(f"generator must be None, Streams, a torch.Generator or a list of {self.n_instances} "
                            f"torch.Generators (one per instance), got {generator!r}")
        draws = [self._draw(batch_size, seed) for seed in seeds]  # per-instance streams: one draw each
        return Batch(torch.stack([h for h, _ in draws], 1), torch.stack([f for _, f in draws], 1))

    def sample_hidden(self, batch_size: int, generator=None) -> torch.Tensor:
        """`sample(...).hidden`, (batch, inst, d_hidden); SAELens builds the dense features either way."""
        return self.sample(batch_size, generator).hidden

    def _draw(self, rows: int, seed: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden (rows, d), features (rows, n)) from SAELens's sampler, torch's global generators seeded `seed`."""
        with nullcontext() if seed is None else _global_rng_seeded(self.device, seed):
            features = self.model.activation_generator.sample(rows)
        hidden = self.model.feature_dict(features)
        return hidden, (features.to_dense() if features.is_sparse else features)

    def true_directions(self) -> torch.Tensor:
        vectors = unit_rows(self.model.feature_dict.feature_vectors.detach().float())
        return vectors.to(self.device).expand(self.n_instances, -1, -1)

    def gradeable(self) -> torch.Tensor:
        """Every feature with a non-zero direction and a chance to fire."""
        fires = self.model.activation_generator.firing_probabilities > 0
        has_direction = self.model.feature_dict.feature_vectors.detach().norm(dim=-1) > 0
        return (fires & has_direction).to(self.device).expand(self.n_instances, -1)


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator, device=generator.device))  # a host read


@contextmanager
def _global_rng_seeded(device: torch.device, seed: int):
    """torch's global generators (the CPU's, and `device`'s if a GPU) seeded with `seed` inside, restored after."""
    cuda = [device.index] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def _parents(hierarchy, n_features: int) -> torch.Tensor:
    """A SAELens Hierarchy as the parent of every feature, (n,), -1 for none; nodes without a feature pass
    their parent through (the hierarchy gates a child by its nearest ancestor that is a feature)."""
    parent = torch.full((n_features,), -1, dtype=torch.long)
    stack = [(root, -1) for root in hierarchy.roots]
    while stack:
        node, above = stack.pop()
        if node.feature_index is not None:
            parent[node.feature_index] = above
            above = node.feature_index
        stack.extend((child, above) for child in node.children)
    return parent


def _marginal_firing_prob(model) -> torch.Tensor | None:
    """P(f_i > 0) per feature, (n,), where it is known exactly: in a world without a hierarchy.

    SAELens draws feature i active with probability p_i (a Gaussian copula keeps that marginal) and gives it
    the value ReLU(mean_i + std_i z), so P(f_i > 0) = p_i Φ(mean_i / std_i). Under a hierarchy a child is also
    gated by its parent and, for mutually exclusive siblings, by a random pick; SAELens's compensation only
    aims at the configured rates, so no rate is claimed there (the report bins by measured frequency instead).
    """
    if model.hierarchy is not None:
        return None
    generator = model.activation_generator
    mean, std = generator.mean_firing_magnitudes.double(), generator.std_firing_magnitudes.double()
    positive = torch.where(std > 0, 0.5 * torch.erfc(-mean / (std.clamp_min(1e-300) * 2**0.5)), (mean > 0).double())
    return (generator.firing_probabilities.double() * positive).cpu()
