"""Elhage-style toy models of superposition, many independent instances at once.

Elhage et al. 2022, "Toy Models of Superposition": n sparse features x are squeezed into
m < n hidden dimensions h = W x and read back out:
    linear:       x' = Wᵀ h + b
    relu_output:  x' = ReLU(Wᵀ h + b)
    hidden_relu:  h = ReLU(W x),  x' = ReLU(Wᵀ h + b)
trained on loss = Σ_i I_i (x_i - x'_i)², averaged over the batch. Here W is stored as
(inst, n_features, d_hidden), so row i of an instance is feature i's hidden direction.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from . import superposition
from .. import weights
from ..checks import positive_int
from ..devices import instance_seeds, make_generator, resolve_device
from ..memory import check_fits, toy_model_bytes

KINDS = ("linear", "relu_output", "hidden_relu")
CONFIG_KEYS = ("n_features", "d_hidden", "n_instances", "kind")


class ToyModel(nn.Module):
    """Toy models with an instances axis.

    Args:
        n_features: n; d_hidden: m.
        n_instances: independent models trained side by side.
        kind: "linear", "relu_output" or "hidden_relu".
        seed: seed of the initial weights (Xavier-normal W, zero b): an int s (instance i is drawn
            from seed s + i) or one int per instance, so an instance starts the same in any batch.
        device: CUDA when present by default.
    """

    def __init__(self, n_features: int, d_hidden: int, n_instances: int = 1, kind: str = "relu_output",
                 seed=0, device=None):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.n_features = positive_int("n_features", n_features)
        self.d_hidden = positive_int("d_hidden", d_hidden)
        self.n_instances = positive_int("n_instances", n_instances)
        self.kind = kind
        device = resolve_device(device)
        check_fits(f"ToyModel(n_features={self.n_features}, d_hidden={self.d_hidden}, n_instances={self.n_instances})",
                   3 * toy_model_bytes(self.n_features, self.d_hidden, self.n_instances), device)  # W's draw: 3 copies
        self.seeds = instance_seeds(seed, self.n_instances)
        std = (2.0 / (self.n_features + self.d_hidden)) ** 0.5  # Xavier normal, as in the paper's code
        W = [torch.randn(self.n_features, self.d_hidden, generator=make_generator(seed, device), device=device)
             for seed in self.seeds]
        self.W = nn.Parameter(std * torch.stack(W))
        self.b = nn.Parameter(torch.zeros(self.n_instances, self.n_features, device=device))

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """h from features x: (batch, inst, n_features) -> (batch, inst, d_hidden)."""
        return _hidden_t(x, self.W, self.kind).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x' = Wᵀ h + b, ReLU'd but for linear: (batch, inst, n_features) -> same."""
        h_t = _hidden_t(x, self.W, self.kind)
        out = torch.baddbmm(self.b[:, None, :], h_t.transpose(1, 2), self.W.transpose(1, 2))  # (inst, batch, n)
        return (out if self.kind == "linear" else torch.relu(out)).transpose(0, 1)

    def feature_directions(self) -> torch.Tensor:
        """Unit hidden directions of the features, (inst, n_features, d_hidden); zero rows stay zero."""
        return F.normalize(self.W.detach(), dim=-1)

    def feature_norms(self) -> torch.Tensor:
        """||W_i||, (inst, n_features)."""
        return superposition.feature_norms(self.W.detach())

    def represented(self, threshold: float = superposition.REPRESENTED_NORM) -> torch.Tensor:
        """Boolean (inst, n_features): ||W_i|| >= threshold (0.5, as in the paper)."""
        return superposition.represented(self.W.detach(), threshold)

    def dimensions_per_feature(self) -> torch.Tensor:
        """D* = m / ||W||_F², (inst,)."""
        return superposition.dimensions_per_feature(self.W.detach())

    def feature_dimensionality(self) -> torch.Tensor:
        """D_i = ||W_i||² / Σ_j (Ŵ_i · W_j)², (inst, n_features)."""
        return superposition.feature_dimensionality(self.W.detach())

    def save(self, directory) -> Path:
        """Write `config.json` (what the constructor needs) and `weights.safetensors` into `directory`."""
        return weights.save(directory, self, {key: getattr(self, key) for key in CONFIG_KEYS})

    @classmethod
    def load(cls, directory, device=None) -> "ToyModel":
        """Rebuild a toy model written by `save`; a missing, corrupt or mismatched file raises ValueError."""
        device = resolve_device(device)
        config, tensors = weights.read(directory, "a toy model", CONFIG_KEYS)
        model = cls(**{k: config[k] for k in CONFIG_KEYS}, device=device)
        weights.load_state(model, tensors, directory)
        return model


def _hidden_t(x: torch.Tensor, W: torch.Tensor, kind: str) -> torch.Tensor:
    """hᵀ = Wᵀ xᵀ per instance: x (batch, inst, n), W (inst, n, m) -> (inst, m, batch).

    Batched products with m-wide outputs run at a fifth of the speed of the same products taken the
    other way round, so every product of the toy model has the batch as the output's long side.
    """
    h_t = torch.bmm(W.transpose(1, 2), x.permute(1, 2, 0))
    return torch.relu(h_t) if kind == "hidden_relu" else h_t


def importance_weighted_mse(model: ToyModel, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Σ_i I_i (x_i - x'_i)² averaged over the batch (Elhage et al. 2022): x (batch, inst, n) -> (inst,)."""
    return (importance * (x - model(x)).pow(2)).sum(-1).mean(0)


def check_dist(model: ToyModel, dist) -> None:
    """A ValueError unless `dist` has the model's (n_instances, n_features)."""
    if (dist.n_instances, dist.n_features) != (model.n_instances, model.n_features):
        raise ValueError(
            f"dist has (n_instances, n_features)=({dist.n_instances}, {dist.n_features}) but the model has "
            f"({model.n_instances}, {model.n_features})"
        )
