"""The sparse autoencoder module: many independent SAEs as one batched set of weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .. import weights
from ..checks import as_tensor, positive_int
from ..devices import instance_seeds, make_generator, resolve_device
from ..memory import TooLarge, check_fits, sae_bytes
from .recipes import get_recipe, recipe_path

SEED_SALT = 0x5AE  # keeps an SAE seeded s off the random numbers of anything else seeded s (e.g. the true directions)


def instance_generator(seed: int, device) -> torch.Generator:
    """The generator instance weights are drawn from: its seed mixed with SEED_SALT (unmixed, an SAE seeded like
    `random_directions` would start with its decoder rows exactly on the true directions)."""
    return make_generator((seed * 0x9E3779B97F4A7C15 + SEED_SALT) % 2**63, device)


def _batched_affine(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W + b per instance: x (batch, inst, m), W (inst, m, n), b (inst, n) -> (batch, inst, n), the bias
    added inside the matmul (one baddbmm)."""
    return torch.baddbmm(bias[:, None, :], x.transpose(0, 1), weight).transpose(0, 1)


class SAE(nn.Module):
    """Sparse autoencoders with an instances axis.

    Weights: W_enc (inst, d_hidden, d_sae), b_enc (inst, d_sae), W_dec (inst, d_sae, d_hidden),
    b_dec (inst, d_hidden), plus whatever the recipe adds (e.g. JumpReLU's log_threshold).
    Row j of W_dec[k] is latent j's decoder direction in instance k.

    Args:
        recipe: a registered name (`toysuper.RECIPES`), an import path "module:Class", or a Recipe class.
        seed: an int s (instance i is initialised from seed s + i), one int per instance, or None (fresh
            seeds). Instance i's weights depend on its own seed only: an SAE of one instance seeded [s_i]
            starts exactly as instance i does here.
        **hyperparameters: the recipe's per-instance settings (`RECIPES[recipe].hyperparameters`), each a
            number or one per instance, and its per-SAE options (`.options`, read back in `sae.options`).
    """

    def __init__(self, d_hidden: int, d_sae: int, n_instances: int = 1, recipe="anthropic_2024",
                 seed=0, device=None, **hyperparameters):
        super().__init__()
        device = self._configure(d_hidden, d_sae, n_instances, recipe, seed, device, hyperparameters)
        check_fits(f"SAE(d_hidden={self.d_hidden}, d_sae={self.d_sae}, n_instances={self.n_instances})",
                   2 * sae_bytes(self.d_hidden, self.d_sae, self.n_instances), device)  # the init draws a copy
        self.register_buffer("samples_seen", torch.zeros((), dtype=torch.float64, device=device))
        n_instances, d_hidden, d_sae = self.n_instances, self.d_hidden, self.d_sae  # 3.0 -> 3
        self.W_enc = nn.Parameter(torch.empty(n_instances, d_hidden, d_sae, device=device))
        self.b_enc = nn.Parameter(torch.empty(n_instances, d_sae, device=device))
        self.W_dec = nn.Parameter(torch.empty(n_instances, d_sae, d_hidden, device=device))
        self.b_dec = nn.Parameter(torch.empty(n_instances, d_hidden, device=device))
        self.recipe.register(self)
        with torch.no_grad():
            self.recipe.init_parameters(self, [instance_generator(s, device) for s in self.seeds])

    def _configure(self, d_hidden, d_sae, n_instances, recipe, seed, device, hyperparameters: dict) -> torch.device:
        """Sizes, recipe, seeds, options and hyperparameters, each checked (the recipe's own checks included);
        makes no weight. Returns the resolved device."""
        self.d_hidden = positive_int("d_hidden", d_hidden)
        self.d_sae = positive_int("d_sae", d_sae)
        self.n_instances = positive_int("n_instances", n_instances)
        self.recipe = get_recipe(recipe)
        self.seeds = instance_seeds(seed, self.n_instances)
        device = resolve_device(device)
        declared = {**self.recipe.hyperparameters, **self.recipe.options}
        unknown = set(hyperparameters) - set(declared)
        if unknown:
            raise ValueError(f"recipe {self.recipe.name!r} has no hyperparameter(s) {sorted(unknown)}; "
                             f"it takes {sorted(declared)}")
        self.options = {name: self._option(name, hyperparameters.get(name, self.recipe.option_default(name)))
                        for name in self.recipe.options}
        for name in self.recipe.hyperparameters:
            value = hyperparameters.get(name, self.recipe.default(name, self.d_sae))
            self.register_buffer(name, self._hyperparameter(name, value, device))
        self._refresh_hyperparameter_max()
        self.recipe.check(self)
        return device

    @classmethod
    def check_arguments(cls, d_hidden: int, d_sae: int, n_instances: int = 1, recipe="anthropic_2024",
                        **hyperparameters) -> None:
        """The constructor's checks, making no weight (a sweep's dry run of a width of 10**8 allocates nothing)."""
        shell = cls.__new__(cls)
        nn.Module.__init__(shell)
        shell._configure(d_hidden, d_sae, n_instances, recipe, 0, "cpu", hyperparameters)

    def _hyperparameter(self, name: str, value, device) -> torch.Tensor:
        """`value` as a checked (inst,) tensor."""
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, bool) or (isinstance(v, torch.Tensor) and v.dtype == torch.bool) for v in values):
            raise TypeError(f"{name} must be a number or one number per instance, not a boolean, got {value!r}")
        value = as_tensor(name, value, device).reshape(-1)
        if value.numel() == 1:
            value = value.expand(self.n_instances)
        if value.shape != (self.n_instances,):
            raise ValueError(f"{name} must be a number or one value per instance ({self.n_instances}), "
                             f"got {value.numel()} values")
        if not torch.isfinite(value).all() or (value < 0).any():
            raise ValueError(f"{name} must be finite and >= 0, got {value.tolist()}")
        if name in self.recipe.positive_hyperparameters and (value <= 0).any():
            raise ValueError(f"{name} must be > 0, got {value.tolist()}")
        if name in self.recipe.integer_hyperparameters and (value != value.round()).any():
            raise ValueError(f"{name} must be whole numbers, got {value.tolist()}")
        return value.clone()

    def _option(self, name: str, value) -> bool | str:
        """`value` checked against the option's declaration: a bool, or one of the listed strings."""
        declared = self.recipe.options[name]
        choices = declared if isinstance(declared, tuple) else None
        kind = type(choices[0] if choices else declared)
        if type(value) is not kind or (choices and value not in choices):
            wanted = f"one of {list(choices)}" if choices else f"a {kind.__name__}"
            raise ValueError(f"{name} must be {wanted} (an option of recipe {self.recipe.name!r}), got {value!r}")
        return value

    def _refresh_hyperparameter_max(self) -> None:
        # Kept on the host so that recipes can size tensors (top-k) or skip work without a device sync per step.
        self._hyperparameter_range = {name: (float(getattr(self, name).min()), float(getattr(self, name).max()))
                                      for name in self.recipe.hyperparameters}

    def hyperparameter_min(self, name: str) -> float:
        """Smallest value of a per-instance hyperparameter over the instances."""
        return self._hyperparameter_range[name][0]

    def hyperparameter_max(self, name: str) -> float:
        """Largest value of a per-instance hyperparameter over the instances."""
        return self._hyperparameter_range[name][1]

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def hyperparameter_values(self) -> dict[str, list[float]]:
        """Each per-instance hyperparameter as a list of length n_instances."""
        return {name: getattr(self, name).tolist() for name in self.recipe.hyperparameters}

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc x + b_enc: (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        return _batched_affine(x, self.W_enc, self.b_enc)

    def centred_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x - b_dec), (batch, inst, d_sae), as W_enc x - W_enc b_dec: b_dec's gradient through the encoder
        is then a vector-matrix product, not a backward matmul over the batch."""
        return _batched_affine(x, self.W_enc, -self.encoded_b_dec())

    def centred_pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """W_enc (x - b_dec) + b_enc, the encoder of every recipe that subtracts b_dec first, (batch, inst, d_sae)."""
        return _batched_affine(x, self.W_enc, self.b_enc - self.encoded_b_dec())

    def encoded_b_dec(self) -> torch.Tensor:
        """W_enc b_dec, (inst, d_sae)."""
        return torch.einsum("id,ids->is", self.b_dec, self.W_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations at inference, each sample on its own (BatchTopK uses its learnt threshold):
        (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        return self.recipe.encode(self, x)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """W_dec f + b_dec: (batch, inst, d_sae) -> (batch, inst, d_hidden)."""
        return _batched_affine(acts, self.W_dec, self.b_dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x̂: (batch, inst, d_hidden) -> (batch, inst, d_hidden)."""
        return self.decode(self.encode(x))

    def decoder_directions(self) -> torch.Tensor:
        """Unit decoder rows, (inst, d_sae, d_hidden)."""
        return F.normalize(self.W_dec.detach(), dim=-1)

    @torch.no_grad()
    def fold_input_scale(self, scale: torch.Tensor) -> None:
        """Make an SAE that reads inputs s·x (s: `scale`, (inst,)) read x: every recipe encodes through W_enc
        applied to s·x (- b_dec), so s moves into W_enc and 1/s into W_dec and b_dec (pre-activations, hence
        thresholds, do not change). fold_input_scale(1/s) undoes it."""
        scale = scale.to(self.device).reshape(self.n_instances)
        self.W_enc.mul_(scale[:, None, None])
        self.W_dec.div_(scale[:, None, None])
        self.b_dec.div_(scale[:, None])

    def config(self) -> dict:
        """Everything `SAE.load` needs besides the weights; "recipe" is a built-in's name or "module:Class"."""
        return {"d_hidden": self.d_hidden, "d_sae": self.d_sae, "n_instances": self.n_instances,
                "recipe": recipe_path(self.recipe), "seed": self.seeds, **self.hyperparameter_values(),
                **self.options}

    def save(self, directory) -> Path:
        """Write `config.json` and `weights.safetensors` (reading raw inputs) into `directory`."""
        return weights.save(directory, self, self.config())

    @classmethod
    def load(cls, directory, device=None) -> "SAE":
        """Rebuild an SAE written by `save`; a missing, corrupt or mismatched file raises ValueError."""
        device = resolve_device(device)
        config, tensors = weights.read(directory, "an SAE", ("d_hidden", "d_sae", "n_instances", "recipe"))
        try:
            recipe = get_recipe(config["recipe"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"the SAE in {str(directory)!r} was trained with recipe {config['recipe']!r}, "
                             f"which cannot be found here: {error}") from error
        try:
            sae = cls(device=device, **{**config, "recipe": recipe})
        except TooLarge:
            raise
        except (TypeError, ValueError) as error:
            raise ValueError(f"config.json in {str(directory)!r} does not describe an SAE: {error}") from error
        for name in sae.recipe.hyperparameters:  # saved twice, as JSON and as a buffer: they must agree
            if name in tensors and not torch.equal(tensors[name].to(sae.device), getattr(sae, name)):
                raise ValueError(f"config.json in {str(directory)!r} says {name}={getattr(sae, name).tolist()} but "
                                 f"its weights.safetensors holds {name}={tensors[name].tolist()}; the two must agree")
        weights.load_state(sae, tensors, directory)  # the hyperparameters as built: their range stands
        return sae

    def extra_repr(self) -> str:
        return (f"recipe={self.recipe.name!r}, d_hidden={self.d_hidden}, d_sae={self.d_sae}, "
                f"n_instances={self.n_instances}")
