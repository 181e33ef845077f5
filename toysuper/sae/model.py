"""The sparse autoencoder module: many independent SAEs as one batched set of weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..checks import as_tensor, positive_int
from ..devices import make_generator, resolve_device
from .recipes import get_recipe

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class SAE(nn.Module):
    """Sparse autoencoders with an instances axis.

    Weights: W_enc (inst, d_hidden, d_sae), b_enc (inst, d_sae), W_dec (inst, d_sae, d_hidden),
    b_dec (inst, d_hidden). Row j of W_dec[k] is latent j's decoder direction in instance k.

    Args:
        d_hidden: width of the activations the SAE reads.
        d_sae: number of latents.
        n_instances: independent SAEs trained side by side.
        recipe: a name from `toysuper.RECIPES`.
        seed: seed of the initial weights.
        device: CUDA when present by default.
        **hyperparameters: the recipe's per-instance settings (e.g. l1_coefficient), each a
            number or one value per instance.
    """

    def __init__(self, d_hidden: int, d_sae: int, n_instances: int = 1, recipe: str = "anthropic_2024",
                 seed: int | None = 0, device=None, **hyperparameters):
        super().__init__()
        self.d_hidden = positive_int("d_hidden", d_hidden)
        self.d_sae = positive_int("d_sae", d_sae)
        self.n_instances = positive_int("n_instances", n_instances)
        self.recipe = get_recipe(recipe)
        device = resolve_device(device)
        unknown = set(hyperparameters) - set(self.recipe.hyperparameters)
        if unknown:
            raise ValueError(f"recipe {recipe!r} has no hyperparameter(s) {sorted(unknown)}; "
                             f"it takes {sorted(self.recipe.hyperparameters)}")
        for name, default in self.recipe.hyperparameters.items():
            value = as_tensor(name, hyperparameters.get(name, default), device).reshape(-1)
            if value.numel() == 1:
                value = value.expand(n_instances)
            if value.shape != (n_instances,):
                raise ValueError(f"{name} must be a number or one value per instance ({n_instances}), "
                                 f"got {value.numel()} values")
            if not torch.isfinite(value).all() or (value < 0).any():
                raise ValueError(f"{name} must be finite and >= 0, got {value.tolist()}")
            self.register_buffer(name, value.clone())
        self.W_enc = nn.Parameter(torch.empty(n_instances, d_hidden, d_sae, device=device))
        self.b_enc = nn.Parameter(torch.empty(n_instances, d_sae, device=device))
        self.W_dec = nn.Parameter(torch.empty(n_instances, d_sae, d_hidden, device=device))
        self.b_dec = nn.Parameter(torch.empty(n_instances, d_hidden, device=device))
        with torch.no_grad():
            self.recipe.init_parameters(self, make_generator(seed, device))

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def hyperparameter_values(self) -> dict[str, list[float]]:
        """Each per-instance hyperparameter as a list of length n_instances."""
        return {name: getattr(self, name).tolist() for name in self.recipe.hyperparameters}

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc x + b_enc: (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        return torch.einsum("bid,ids->bis", x, self.W_enc) + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations: (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        return self.recipe.encode(self, x)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """W_dec f + b_dec: (batch, inst, d_sae) -> (batch, inst, d_hidden)."""
        return torch.einsum("bis,isd->bid", acts, self.W_dec) + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x̂: (batch, inst, d_hidden) -> (batch, inst, d_hidden)."""
        return self.decode(self.encode(x))

    def decoder_directions(self) -> torch.Tensor:
        """Unit decoder rows, (inst, d_sae, d_hidden)."""
        W = self.W_dec.detach()
        return W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def config(self) -> dict:
        """Everything `SAE.load` needs besides the weights (JSON-serialisable)."""
        return {"d_hidden": self.d_hidden, "d_sae": self.d_sae, "n_instances": self.n_instances,
                "recipe": self.recipe.name, **self.hyperparameter_values()}

    def save(self, directory) -> Path:
        """Write `config.json` and `weights.safetensors` into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(self.config(), indent=2))
        return directory

    @classmethod
    def load(cls, directory, device=None) -> "SAE":
        """Rebuild an SAE written by `save`; a missing, corrupt or mismatched file raises ValueError."""
        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG_FILE).read_text())
            tensors = load_file(str(directory / WEIGHTS_FILE))
        except (OSError, ValueError, SafetensorError) as error:  # missing file, bad JSON, corrupt weights
            raise ValueError(f"cannot load an SAE from {str(directory)!r}: {error}") from error
        sae = cls(device=device, seed=None, **config)
        try:
            sae.load_state_dict(tensors)
        except RuntimeError as error:
            raise ValueError(f"weights in {str(directory)!r} do not fit its config.json: {error}") from error
        return sae

    def extra_repr(self) -> str:
        return (f"recipe={self.recipe.name!r}, d_hidden={self.d_hidden}, d_sae={self.d_sae}, "
                f"n_instances={self.n_instances}")
