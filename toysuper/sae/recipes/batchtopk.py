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
norm, the encoder starts as the decoder's transpose, b_dec at the geometric median.
"""

from __future__ import annotations

import torch

from .base import Recipe
from .parts import UnitNormDecoder, auxk_loss, l0, squared_error, tied_init

THRESHOLD_EMA = 0.01  # weight of the newest batch once 100 batches have been averaged


class BatchTopK(UnitNormDecoder, Recipe):
    name = "batchtopk"
    hyperparameters = {"k": 8.0, "k_aux": 64.0, "aux_coefficient": 1 / 32}
    integer_hyperparameters = frozenset({"k", "k_aux"})
    positive_hyperparameters = frozenset({"k"})
    citation = "Bussmann, Leask & Nanda 2024, BatchTopK Sparse Autoencoders"
    train_defaults = {"lr": 3e-3, "b_dec_init": "geometric_median", "grad_clip": None}

    def register(self, sae):
        sae.register_buffer("threshold", torch.zeros(sae.n_instances, device=sae.W_dec.device))
        sae.register_buffer("threshold_updates", torch.zeros(sae.n_instances, device=sae.W_dec.device))

    def check(self, sae):
        if sae.hyperparameter_max("k") > sae.d_sae:
            raise ValueError(f"k must be at most d_sae={sae.d_sae}, got {sae.k.tolist()}")

    def init_parameters(self, sae, generators):
        tied_init(sae, generators, 1.0)

    def pre(self, sae, x):
        return sae.pre_activations(x - sae.b_dec)

    def encode(self, sae, x):
        acts = torch.relu(self.pre(sae, x))
        return acts * (acts > sae.threshold[:, None])

    def batch_top_k(self, sae, acts):
        """Keep the k·B largest entries of each instance's (B, d_sae) block; zero the rest."""
        batch = acts.shape[0]
        flat = acts.transpose(0, 1).reshape(sae.n_instances, -1)  # (inst, B·d_sae)
        k_max = int(sae.hyperparameter_max("k")) * batch
        top, index = flat.topk(k_max, dim=-1)
        keep = torch.arange(k_max, device=acts.device) < (sae.k.long() * batch)[:, None]
        kept = torch.zeros_like(flat).scatter(-1, index, top * keep)
        return kept.reshape(sae.n_instances, batch, sae.d_sae).transpose(0, 1)

    def loss(self, sae, x, state=None):
        pre = self.pre(sae, x)
        acts = self.batch_top_k(sae, torch.relu(pre))
        x_hat = sae.decode(acts)
        mse = squared_error(x, x_hat)
        dead = state.dead() if state is not None else None
        aux = auxk_loss(sae, pre, x - x_hat, dead, sae.k_aux.long(), int(sae.hyperparameter_max("k_aux")))
        min_active = torch.where(acts > 0, acts.detach(), torch.inf).amin(dim=(0, 2))  # (inst,)
        return {"loss": mse + sae.aux_coefficient * aux, "mse": mse, "auxk": aux, "l0": l0(acts),
                "min_active": min_active, "fired": (acts > 0).any(0)}

    def after_optimizer_step(self, sae, state, terms):
        super().after_optimizer_step(sae, state, terms)
        seen = torch.isfinite(terms["min_active"])  # a batch where nothing fired says nothing
        rate = torch.clamp(1.0 / (sae.threshold_updates + 1), min=THRESHOLD_EMA)
        sae.threshold += torch.where(seen, rate * (terms["min_active"] - sae.threshold), 0.0)
        sae.threshold_updates += seen.float()
