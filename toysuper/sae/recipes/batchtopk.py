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
from .topk import TopK

THRESHOLD_EMA = 0.01  # weight of the newest batch once 100 batches have been averaged


class BatchTopK(TopK):
    name = "batchtopk"
    citation = "Bussmann, Leask & Nanda 2024, BatchTopK Sparse Autoencoders"
    train_defaults = {**TopK.train_defaults, "dead_window": 2048}

    def register(self, sae):
        sae.register_buffer("threshold", torch.zeros(sae.n_instances, device=sae.W_dec.device))
        sae.register_buffer("threshold_updates", torch.zeros(sae.n_instances, device=sae.W_dec.device))

    def encode(self, sae, x):
        acts = torch.relu(sae.centred_pre_activations(x))
        return acts * (acts > sae.threshold[:, None])

    def select(self, sae, pre, state):
        return selection.batch_top_k(pre, sae.k.long(), int(sae.hyperparameter_max("k")),
                                     fixed_shapes(state, pre.device))

    def code_statistics(self, sae, code):
        kept = torch.where(code.values > 0, code.values.detach(), torch.inf)
        # every instance has the same number of entries, instance after instance
        return {"min_active": kept.view(sae.n_instances, -1).amin(-1)}  # (inst,): the smallest kept activation

    def after_optimizer_step(self, sae, state, terms):
        super().after_optimizer_step(sae, state, terms)
        seen = torch.isfinite(terms["min_active"])  # a batch where nothing fired says nothing
        rate = torch.clamp(1.0 / (sae.threshold_updates + 1), min=THRESHOLD_EMA)
        sae.threshold += torch.where(seen, rate * (terms["min_active"] - sae.threshold), 0.0)
        sae.threshold_updates += seen.float()
