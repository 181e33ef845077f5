"""Resampling dead latents: Bricken et al. 2023, "Towards Monosemanticity", appendix "Neuron Resampling".

At a few points early in training: find the latents silent over a recent window (here half the gap between
resamplings, as the paper's 12,500 of 25,000 steps); score inputs by the squared reconstruction error;
for each dead latent draw an input with probability proportional to the square of that loss; set its
decoder row to the input at unit norm, its encoder row to the same unit vector times 0.2 × the mean
encoder-row norm of the alive latents, its encoder bias to 0; reset the Adam moments of the changed entries.
"""

from __future__ import annotations

import torch

from ..devices import make_generator
from .state import TrainState

ENCODER_NORM_FRACTION = 0.2
RESAMPLE_AT = (0.1, 0.2, 0.3, 0.4)  # fractions of training: early, with time left to learn after each
RESAMPLE_BATCHES = 16  # inputs scored per resampling, in batches (the paper scored 819,200 inputs)
CHUNK = 4096


def resample_steps(steps: int) -> set[int]:
    """The steps (0-based, after which resampling happens) for a run of `steps` steps."""
    return {int(fraction * steps) for fraction in RESAMPLE_AT if int(fraction * steps) > 0}


def resample_window(steps: int, batch_size: int) -> int:
    """Samples a latent must stay silent for to be resampled: half the gap between resamplings."""
    return max(1, int(RESAMPLE_AT[0] * steps / 2) * batch_size)


@torch.no_grad()
def resample_dead_latents(sae, state: TrainState, dead: torch.Tensor, step: int, seeds: list[int],
                          x: torch.Tensor | None = None) -> int:
    """Re-initialise the latents where `dead` (inst, d_sae) is True; returns how many.

    step: the step it happens after; seeds: the instances' data seeds; x: the scored inputs
    (n, inst, d_hidden), drawn with `state.draw` when None. Instance i draws its picks from a generator
    seeded by (its SAE seed, its data seed, step), so its result does not depend on the other instances.
    """
    if x is None:  # drawn even where nothing is dead: each instance's data stream then advances alike,
        x = state.draw(RESAMPLE_BATCHES * state.batch_size)  # whether or not its batch-mates resample
    if not bool(dead.any()):
        return 0
    losses = torch.cat([(chunk - sae(chunk)).pow(2).sum(-1) for chunk in x.split(CHUNK)])  # ||x - x̂||², (n, inst)
    weights = losses.pow(2)
    alive = ~dead
    mean_alive_norm = (sae.W_enc.norm(dim=1) * alive).sum(-1) / alive.sum(-1).clamp_min(1)
    mean_alive_norm = torch.where(alive.any(-1), mean_alive_norm, 1.0)
    for instance in range(sae.n_instances):  # a rare event; per-instance generators keep instances independent
        latents = dead[instance].nonzero().squeeze(-1)
        if len(latents) == 0:
            continue
        generator = make_generator(hash((sae.seeds[instance], seeds[instance], step)) % 2**62, x.device)
        probability = weights[:, instance]
        if not bool((probability > 0).any()):
            probability = torch.ones_like(probability)
        picks = torch.multinomial(probability, len(latents), replacement=True, generator=generator)
        directions = torch.nn.functional.normalize(x[picks, instance], dim=-1)  # (n_dead, d_hidden)
        sae.W_dec[instance, latents] = directions
        sae.W_enc[instance][:, latents] = directions.T * (ENCODER_NORM_FRACTION * mean_alive_norm[instance])
        sae.b_enc[instance, latents] = 0.0
    sae.recipe.reset_latents(sae, dead)
    masks = {sae.W_enc: dead[:, None, :], sae.b_enc: dead, sae.W_dec: dead[:, :, None],
             **{parameter: dead for parameter in sae.recipe.per_latent_parameters(sae).values()}}
    for parameter, mask in masks.items():
        for moment in state.optimizer.state.get(parameter, {}).values():
            if torch.is_tensor(moment) and moment.shape == parameter.shape:
                moment.masked_fill_(mask.expand_as(moment), 0.0)
    return int(dead.sum())
