"""BatchTopK SAE: a top-(k·batch) over the whole batch in training, a threshold at inference.

Bussmann, Leask & Nanda 2024, "BatchTopK Sparse Autoencoders":
    training:  z = BatchTopK_{k·B}(ReLU(W_enc (x - b_dec) + b_enc))   (the k·B largest
               activations of the whole batch of B samples survive, so a sample may use more
               or fewer than k latents while the batch averages k),
    inference: z = a · 1[a > θ] with a = ReLU(W_enc (x - b_dec) + b_enc),
    x̂ = W_dec z + b_dec,   loss = ||x - x̂||² + α AuxK (as in Gao et al. 2024, α = 1/32).
θ (one per SAE) estimates the smallest activation BatchTopK keeps: every training step it is
updated towards that batch's minimum positive kept activation, as a running mean over the
first 100 updates and an exponential moving average (weight 0.01) after that, so encoding a
sample at inference does not depend on the rest of its batch. Decoder rows are held at unit
norm, the encoder starts as the decoder's transpose, b_dec at the geometric median. Everything
but the batch-wide selection is TopK's (this class extends it), sparse code included.

TopK warm-up (ours, not the paper's): for the first `topk_warmup` of training (default 0.9) the
code is TopK's, each sample's k largest, and only then the batch-wide cut; θ is estimated from the
batch-wide steps alone. Trained batch-wide from the start, the latents that lose the first cuts are
starved: on benchmarks/recipe_robustness.py's small tasks their encoder rows shrink (median norm 0.53
against 0.84 under TopK) and b_enc turns negative, so they never reach the cut again, while AuxK
misses them because they still fire now and then (half the latents of `standard-small` fire at
0.04% against the features' 1.6%, and the rest are blends: recovered@0.9 = 0.28 at 600k samples,
where TopK reaches 0.90). A plain dense re-implementation without AuxK does the same (0.11 against
TopK's 0.83 at 300k samples), so this is the batch-wide cut's dynamics, not a bug. Per-sample TopK
gives every latent that best matches a sample's feature its turn; the batch-wide cut then only
moves the kept entries between samples: with the warm-up, standard-small 0.94, wide 1.00 (0.02
before), few-l0-2 0.94 (0.08; a warm-up of 0.8 left it at 0.67). topk_warmup = 0 is the paper's
BatchTopK.

A latent counts as dead (for AuxK) after 2,048 samples without firing (2 batches of 1024), as
in the authors' released code, which counts 5 batches, rather than Gao et al.'s 10M tokens:
a latent that the batch-wide cut leaves out early is pulled back by AuxK only while it still
sits near the cut. On the standard task a 100,000-sample window leaves 24% of the latents
dead and recovered@0.9 ≈ 0.50; 2,048 samples gives 0.91–0.92 (seeds 0–3).
"""

from __future__ import annotations

import torch

from .. import selection
from ..state import fixed_shapes
from .parts import check_fraction
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
        sae.register_buffer("threshold", torch.zeros(sae.n_instances, device=sae.W_dec.device))
        sae.register_buffer("threshold_updates", torch.zeros(sae.n_instances, device=sae.W_dec.device))

    def encode(self, sae, x):
        acts = torch.relu(sae.centred_pre_activations(x))
        return acts * (acts > sae.threshold[:, None])

    def select(self, sae, pre, state):
        k, k_max, fixed = sae.k.long(), int(sae.hyperparameter_max("k")), fixed_shapes(state, pre.device)
        if sae.hyperparameter_max("topk_warmup") == 0:  # no instance warms up (a setting, read on the host)
            return selection.batch_top_k(pre, k, k_max, fixed)
        warm = self.warming_up(sae, state)  # (inst,) bool
        if not fixed:  # an eager CPU step reads the flags back for free and computes only what it needs
            if not bool(warm.any()):
                return selection.batch_top_k(pre, k, k_max, fixed)
            if bool(warm.all()):
                return selection.top_k(pre, k, k_max)
        # both selections give inst·batch·k_max entries, instance-major: pick each instance's whole block
        per_sample, batch_wide = selection.top_k(pre, k, k_max), selection.batch_top_k(pre, k, k_max, fixed)
        block = warm.repeat_interleave(per_sample[0].numel() // sae.n_instances)
        return tuple(torch.where(block, a, b) for a, b in zip(per_sample, batch_wide))

    def warming_up(self, sae, state) -> torch.Tensor:
        """(inst,) bool: whether the instance still selects per sample (TopK warm-up); outside training, no."""
        if state is None or state.step is None:
            return torch.zeros_like(sae.topk_warmup, dtype=torch.bool)
        return state.progress() < sae.topk_warmup

    def code_statistics(self, sae, code):
        kept = torch.where(code.values > 0, code.values.detach(), torch.inf)
        # every instance has the same number of entries, instance after instance
        return {"min_active": kept.view(sae.n_instances, -1).amin(-1)}  # (inst,): the smallest kept activation

    def after_optimizer_step(self, sae, state, terms):
        super().after_optimizer_step(sae, state, terms)
        # a batch where nothing fired says nothing, nor does a TopK warm-up step
        seen = torch.isfinite(terms["min_active"]) & ~self.warming_up(sae, state)
        rate = torch.clamp(1.0 / (sae.threshold_updates + 1), min=THRESHOLD_EMA)
        sae.threshold += torch.where(seen, rate * (terms["min_active"] - sae.threshold), 0.0)
        sae.threshold_updates += seen.float()
