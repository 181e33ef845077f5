"""What a recipe is: how an SAE encodes, what it minimises, what it enforces.

A recipe is stateless: its numbers live on the SAE (parameters, per-instance hyperparameters as (inst,)
buffers, running statistics) so that SAEs with different settings train as one batched program. It
works in training units: `train_sae` hands it inputs already multiplied by the input scale (when the
recipe asks for one) and folds that scale into the weights at the end.
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
    """A constraint or controller composed into a recipe; the trainer calls it around the optimiser step."""

    def register(self, sae) -> None:
        """Create the buffers it needs on `sae`."""

    def before_optimizer_step(self, sae, state: TrainState) -> None:
        """Adjust gradients."""

    def after_optimizer_step(self, sae, state: TrainState, out: LossOutput) -> None:
        """Restore the constraint or update the controller (under no_grad)."""


class Recipe:
    """Base class: a subclass declares `name` and `hyperparameters` (and whatever else below applies) and
    implements `init_parameters`, `encode` and `loss`; `register_recipe` makes it known by name."""

    name: str = ""
    hyperparameters: dict[str, float] = {}  # per-instance numbers and their defaults: (inst,) buffers on the SAE
    options: dict[str, bool | str | tuple[str, ...]] = {}
    """Per-SAE switches and their defaults (`sae.options`): a bool or a string; a tuple lists the allowed
    strings, the first the default."""
    sparsity_knob: str | None = None  # the hyperparameter a sweep turns to trade sparsity for reconstruction
    saelens_export: str | None = None  # the SAELens architecture its inference is (saelens_format.ARCHITECTURES)
    centres_input: bool = True  # whether the encoder reads x - b_dec or x (SAELens's apply_b_dec_to_input)
    integer_hyperparameters: frozenset[str] = frozenset()
    positive_hyperparameters: frozenset[str] = frozenset()  # those that must be > 0 rather than >= 0
    citation: str = ""
    train_defaults: dict = {}  # `train_sae` settings of its papers (lr, betas, b_dec_init, resample, ...)
    input_scaling: str | None = None  # "mean_norm_sqrt_d" (E||x|| = √d), "unit_mean_squared_norm" (E||x||² = 1)
    constraints: tuple[Hook, ...] = ()  # what holds after every step (e.g. UnitNormDecoder())
    controllers: tuple[Hook, ...] = ()  # what steers a hyperparameter during training (e.g. TargetL0())

    def default(self, name: str, d_sae: int) -> float:
        """The value an SAE of `d_sae` latents takes for a hyperparameter its caller leaves out."""
        return self.hyperparameters[name]

    def option_default(self, name: str) -> bool | str:
        declared = self.options[name]
        return declared[0] if isinstance(declared, tuple) else declared

    def register(self, sae) -> None:
        """Create the recipe's own parameters or buffers on `sae` (before `init_parameters`); an override
        calls super().register(sae), which registers its hooks' buffers."""
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
        """The loss of inputs x (batch, inst, d_hidden). `state` says how far training is and which latents
        are dead; None means a finished run with nothing dead."""
        raise NotImplementedError

    def phase_boundaries(self, sae, steps: int) -> list[int]:
        """The steps at which the loss changes form, ascending: `state.phase` counts those reached."""
        return []

    def after_optimizer_step(self, sae, state: TrainState, out: LossOutput) -> None:
        """Update running statistics (under no_grad, before the constraints' and controllers')."""

    def reset_latents(self, sae, mask: torch.Tensor) -> None:
        """Re-initialise the recipe's own per-latent parameters where mask (inst, d_sae) is True
        (dead-latent resampling)."""

    def per_latent_parameters(self, sae) -> dict[str, torch.nn.Parameter]:
        """The recipe's own (inst, d_sae) parameters, whose optimiser state resampling resets."""
        return {}
