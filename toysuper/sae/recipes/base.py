"""What a recipe is: how an SAE encodes, what it is trained to minimise, what it enforces.

A recipe is stateless; every number it needs lives on the SAE (parameters, per-instance
hyperparameters as buffers of shape (inst,), and any running statistics as buffers) so that
many SAEs with different settings train as one batched program. All of a recipe's maths
happens in its training units: `train_sae` hands it inputs already multiplied by the
per-instance input scale (when the recipe asks for one) and folds that scale into the
weights when training ends.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..state import TrainState


class LossOutput(NamedTuple):
    """What a recipe's loss returns for one batch."""

    loss: torch.Tensor
    """(inst,): the loss minimised; instances are independent, so the trainer minimises their sum."""
    terms: dict[str, torch.Tensor]
    """Further (inst,) terms, logged by name (e.g. "mse", "auxk")."""
    fired: torch.Tensor
    """bool (inst, d_sae): which latents fired in this batch (the trainer's dead-latent counters)."""
    l0: torch.Tensor
    """(inst,): mean number of firing latents per sample (logged; read by the target-L0 controller)."""


class Hook:
    """A rule composed into a recipe (`Recipe.constraints`, `Recipe.controllers`): the trainer calls each
    one's hooks around the optimiser step, in the order listed."""

    def register(self, sae) -> None:
        """Create the buffers it needs on `sae`."""

    def before_optimizer_step(self, sae, state: TrainState) -> None:
        """Adjust gradients."""

    def after_optimizer_step(self, sae, state: TrainState, out: LossOutput) -> None:
        """Restore the constraint or update the controller (under no_grad)."""


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
    """None, "mean_norm_sqrt_d" (E||x|| = √d_hidden, Anthropic) or "unit_mean_squared_norm" (E||x||² = 1,
    Gemma Scope)."""

    constraints: tuple[Hook, ...] = ()
    """What holds after every step (e.g. UnitNormDecoder()), applied by the trainer."""
    controllers: tuple[Hook, ...] = ()
    """What steers a hyperparameter during training (e.g. TargetL0()), updated by the trainer."""

    def default(self, name: str, d_sae: int) -> float:
        """The value an SAE of `d_sae` latents takes for a hyperparameter its caller leaves out."""
        return self.hyperparameters[name]

    def option_default(self, name: str) -> bool | str:
        """The value an SAE takes for an option its caller leaves out."""
        declared = self.options[name]
        return declared[0] if isinstance(declared, tuple) else declared

    def register(self, sae) -> None:
        """Create the recipe's own parameters or buffers on `sae` (before `init_parameters`); a subclass that
        overrides it calls super().register(sae), which registers the constraints' and controllers' buffers."""
        for hook in (*self.constraints, *self.controllers):
            hook.register(sae)

    def check(self, sae) -> None:
        """Reject hyperparameter values the recipe cannot use (ValueError naming the parameter)."""

    def init_parameters(self, sae, generators: list[torch.Generator]) -> None:
        """Set the SAE's initial weights (under no_grad); instance i draws from generators[i]."""
        raise NotImplementedError

    def encode(self, sae, x: torch.Tensor) -> torch.Tensor:
        """Inference-mode latent activations, (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        raise NotImplementedError

    def loss(self, sae, x: torch.Tensor, state: TrainState | None = None) -> LossOutput:
        """The loss of inputs x (batch, inst, d_hidden). `state` says how far training is (warm-ups) and which
        latents are dead; None means a finished run with nothing dead (for tests and notebooks)."""
        raise NotImplementedError

    def phase_boundaries(self, sae, steps: int) -> list[int]:
        """The steps at which the recipe's loss changes form (e.g. BatchTopK's TopK warm-up ends), ascending:
        the trainer sets `state.phase` to how many of them the step has reached."""
        return []

    def after_optimizer_step(self, sae, state: TrainState, out: LossOutput) -> None:
        """Update the recipe's running statistics (under no_grad, before its constraints' and controllers')."""

    def reset_latents(self, sae, mask: torch.Tensor) -> None:
        """Re-initialise the recipe's own per-latent parameters where mask (inst, d_sae) is True
        (called by dead-latent resampling, after it has set the encoder and decoder rows)."""

    def per_latent_parameters(self, sae) -> dict[str, torch.nn.Parameter]:
        """The recipe's own parameters of shape (inst, d_sae), whose optimiser state resampling resets."""
        return {}
