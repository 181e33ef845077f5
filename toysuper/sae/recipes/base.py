"""What a recipe is: how an SAE encodes, what it is trained to minimise, what it enforces.

A recipe is stateless; every number it needs lives on the SAE (parameters, and per-instance
hyperparameters as buffers of shape (inst,)) so that many SAEs with different settings train
as one batched program.
"""

from __future__ import annotations

import torch


class Recipe:
    """Base class: subclasses set `name`, `hyperparameters` and implement `encode` and `loss`."""

    name: str = ""
    hyperparameters: dict[str, float] = {}
    """Per-instance hyperparameters and their defaults, e.g. {"l1_coefficient": 5.0}."""
    citation: str = ""

    def init_parameters(self, sae, generator: torch.Generator) -> None:
        """Set the SAE's initial weights (called once, under no_grad)."""
        raise NotImplementedError

    def encode(self, sae, x: torch.Tensor) -> torch.Tensor:
        """Latent activations, (batch, inst, d_hidden) -> (batch, inst, d_sae)."""
        raise NotImplementedError

    def loss(self, sae, x: torch.Tensor, progress: float) -> dict[str, torch.Tensor]:
        """Loss terms, each of shape (inst,); "loss" is the one minimised.

        Must also return "fired": bool (inst, d_sae), which latents fired in this batch
        (the trainer's dead-latent tracking). `progress` is the fraction of training
        done, in [0, 1], for warm-ups.
        """
        raise NotImplementedError

    def before_optimizer_step(self, sae) -> None:
        """Adjust gradients (e.g. remove the part that would change a unit decoder's norm)."""

    def after_optimizer_step(self, sae) -> None:
        """Restore constraints (e.g. renormalise decoder rows)."""
