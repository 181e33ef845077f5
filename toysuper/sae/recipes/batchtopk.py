"""BatchTopK SAE: a top-(k·batch) over the whole batch in training, a threshold at inference.

Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders":
    training:  z = BatchTopK_{k·B}(ReLU(W_enc (x - b_dec) + b_enc))   (the k·B largest activations of
               the batch of B samples survive: a sample may use more or fewer than k latents),
    inference: z = a · 1[a > θ] with a = ReLU(W_enc (x - b_dec) + b_enc),
    x̂ = W_dec z + b_dec,   loss = ||x - x̂||² + α AuxK (as in Gao et al. 2024, α = 1/32).
θ (one per SAE) estimates the smallest activation BatchTopK keeps: each step moves it towards the batch's
minimum positive kept activation, as a running mean over the first 100 updates and an exponential moving
average (weight 0.01) after. Everything but the batch-wide selection is TopK's (this class extends it).

Ours, not the paper's (docs/tuning.md): for the first `topk_warmup` of training (default 0.9) the code
is TopK's, each sample's k largest, so that the latents losing the first batch-wide cuts do not starve;
θ learns from the batch-wide steps alone; topk_warmup = 0 is the paper's BatchTopK. And a latent counts
as dead (for AuxK) after 2,048 samples without firing, as in the authors' code, not Gao et al.'s 10M.
"""

from __future__ import annotations

import torch

from .parts import check_fraction
from .. import codes
from .topk import TopK

THRESHOLD_EMA = 0.01  # weight of the newest batch once 100 batches have been averaged


class BatchTopK(TopK):
    name = "batchtopk"
    citation = "Bussmann, Leask & Nanda 2024, BatchTopK Sparse Autoencoders"
    saelens_export = "batchtopk"  # its inference: one learnt threshold
    hyperparameters = {**TopK.hyperparameters, "topk_warmup": 0.9}
    train_defaults = {**TopK.train_defaults, "dead_window": 2048}

    def check(self, sae):
        super().check(sae)
        check_fraction(sae, "topk_warmup")

    def register(self, sae):
        super().register(sae)
        sae.register_buffer("threshold", torch.zeros(sae.n_instances, device=sae.W_dec.device))
        sae.register_buffer("threshold_updates", torch.zeros(sae.n_instances, device=sae.W_dec.device))

    def encode(self, sae, x):
        acts = torch.relu(sae.centred_pre_activations(x))
        return acts * (acts > sae.threshold[:, None])

    def phase_boundaries(self, sae, steps):
        """Phase 0: every instance warms up; 1: some do (where the instances' warm-ups differ); 2: none."""
        return [first_step_past(sae.hyperparameter_min("topk_warmup"), steps),
                first_step_past(sae.hyperparameter_max("topk_warmup"), steps)]

    def select(self, sae, pre, state):
        k, k_max = sae.k.long(), int(sae.hyperparameter_max("k"))
        phase = 2 if state is None or state.step is None else state.phase
        if phase == 0:
            return codes.top_k(pre, k, k_max)
        if phase == 2:
            return codes.choose_batch_top_k(pre, k, k_max)
        # both give inst·batch·k_max entries: each instance takes the one it is in
        warm = self.warming_up(sae, state)[:, None]
        per_sample, batch_wide = codes.top_k(pre, k, k_max), codes.choose_batch_top_k(pre, k, k_max)
        return tuple(torch.where(warm, a, b) for a, b in zip(per_sample, batch_wide))

    def warming_up(self, sae, state) -> torch.Tensor:
        """(inst,) bool: whether the instance still selects per sample; outside training, no."""
        if state is None or state.step is None:
            return torch.zeros_like(sae.topk_warmup, dtype=torch.bool)
        return state.progress() < sae.topk_warmup

    def code_statistics(self, sae, pre, positions, keep):
        kept = torch.relu(pre).transpose(0, 1).reshape(sae.n_instances, -1).gather(1, positions)
        return {"min_active": torch.where(keep & (kept > 0), kept, torch.inf).amin(-1)}  # the smallest kept, (inst,)

    def after_optimizer_step(self, sae, state, out):
        # a batch where nothing fired says nothing, nor does a TopK warm-up step
        min_active = out.terms["min_active"]
        seen = torch.isfinite(min_active) & ~self.warming_up(sae, state)
        rate = torch.clamp(1.0 / (sae.threshold_updates + 1), min=THRESHOLD_EMA)
        sae.threshold += torch.where(seen, rate * (min_active - sae.threshold), 0.0)
        sae.threshold_updates += seen.float()


def first_step_past(fraction: float, steps: int) -> int:
    """The first step (0-based) at which TrainState.progress() >= fraction, in the same float32 arithmetic."""
    progress = (torch.arange(steps + 1, dtype=torch.float32) / max(1, steps)).clamp(max=1.0)
    return int((progress < fraction).sum())
