"""What a recipe is: how an SAE encodes, what it is trained to minimise, what it enforces.

A recipe is stateless; every number it needs lives on the SAE (parameters, per-instance
hyperparameters as buffers of shape (inst,), and any running statistics as buffers) so that
many SAEs with different settings train as one batched program. All of a recipe's maths
happens in its training units: `train_sae` hands it inputs already multiplied by the
per-instance input scale (when the recipe asks for one) and folds that scale into the
weights when training ends.
"""

from __future__ import annotations

import torch

from ..state import TrainState


class Recipe:
    """Base class: subclasses declare `name`, `hyperparameters` (and whatever else below applies)
    and implement `encode` and `loss`; `register_recipe` makes them known by name."""

    name: str = ""
    hyperparameters: dict[str, float] = {}
    """Per-instance numbers and their defaults, e.g. {"l1_coefficient": 5.0}: (inst,) buffers on the SAE."""
    options: dict[str, bool | str | tuple[str, ...]] = {}
    """Per-SAE switches and their defaults, in `sae.options`: a bool, or a string; a tuple of strings
    lists the allowed ones, the first being the default, e.g. {"sparsity_penalty": ("tanh", "l0")}."""
    sparsity_knob: str | None = None
    """The hyperparameter a sweep turns to trade sparsity for reconstruction ("k", "l1_coefficient")."""
    saelens_export: str | None = None
    """The SAELens architecture this recipe's inference is written as (one of
    `grade.saelens_format.ARCHITECTURES`, reading the parameters that built-in reads), or None: not exportable."""
    centres_input: bool = True
    """Whether the encoder reads x - b_dec (True) or x (SAELens's apply_b_dec_to_input)."""
    integer_hyperparameters: frozenset[str] = frozenset()
    """Hyperparameters that must be whole numbers (k of TopK)."""
    positive_hyperparameters: frozenset[str] = frozenset()
    """Hyperparameters that must be > 0 rather than >= 0."""
    citation: str = ""
    train_defaults: dict = {}
    """`train_sae` settings this recipe's papers use (lr, betas, b_dec_init, lr_warmup, resample, ...)."""
    input_scaling: str | None = None
    """None, "mean_norm_sqrt_d" (E||x|| = √d_hidden, Anthropic) or "unit_mean_squared_norm" (E||x||² = 1, Gemma Scope)."""

    def default(self, name: str, d_sae: int) -> float:
        """The value an SAE of `d_sae` latents takes for a hyperparameter its caller leaves out."""
        return self.hyperparameters[name]

    def option_default(self, name: str) -> bool | str:
        """The value an SAE takes for an option its caller leaves out."""
        declared = self.options[name]
        return declared[0] if isinstance(declared, tuple) else declared

    def register(self, sae) -> None:
        """Create the recipe's own parameters or buffers on `sae` (before `init_parameters`)."""

    def check(self, sae) -> None:
        """Reject hyperparameter values the recipe cannot use (ValueError naming the parameter)."""

    def init_parameters(self, sae, generators: list[torch.Generator]) -> None:
        """Set the SAE's initial weights (under no_grad); instance i draws from generators[i]."""
        raise NotImplementedError

    def encode(self, sae, x: torch.Tensor) -> torch.Tensor:
        """Inference-mode latent activations, (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        raise NotImplementedError

    def loss(self, sae, x: torch.Tensor, state: TrainState | None = None) -> dict[str, torch.Tensor]:
        """Loss terms, each of shape (inst,); "loss" is the one minimised.

        Must also return "fired": bool (inst, d_sae), which latents fired in this batch (the
        trainer's dead-latent tracking). `state` says how far training is (warm-ups) and which
        latents are dead; None means a finished run with nothing dead (for tests and notebooks).
        """
        raise NotImplementedError

    def before_optimizer_step(self, sae, state: TrainState) -> None:
        """Adjust gradients (e.g. remove the part that would change a unit decoder's norm)."""

    def after_optimizer_step(self, sae, state: TrainState, terms: dict[str, torch.Tensor]) -> None:
        """Restore constraints and update running statistics (called under no_grad)."""

    def reset_latents(self, sae, mask: torch.Tensor) -> None:
        """Re-initialise the recipe's own per-latent parameters where mask (inst, d_sae) is True
        (called by dead-latent resampling, after it has set the encoder and decoder rows)."""

    def per_latent_parameters(self, sae) -> dict[str, torch.nn.Parameter]:
        """The recipe's own parameters of shape (inst, d_sae), whose optimiser state resampling resets."""
        return {}
