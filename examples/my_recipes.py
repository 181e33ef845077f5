"""An SAE recipe from outside toysuper: p-annealing (Karvonen et al. 2024).

Karvonen, Wright, Rager, Angell, Brinkmann, Smith, Verdun, Bau & Marks 2024, "Measuring Progress in
Dictionary Learning for Language Model Interpretability with Board Game Models" (NeurIPS 2024): a
ReLU SAE whose sparsity penalty is the L_p^p quasi-norm, with p annealed from 1 (L1, convex, easy to
start from) towards p_end < 1, which charges a latent for firing more than for its size, as L0 does:
    f = ReLU(W_enc (x - b_dec) + b_enc),   x̂ = W_dec f + b_dec,
    loss = ||x - x̂||² + λ Σ_i (f_i ||W_dec,i||)^p,
    p = 1 until `anneal_start` of training, then linear down to p_end at its end.
Here the decoder norms sit inside the penalty (Conerly et al. 2024) in place of the paper's unit-norm
decoder, and the paper's rescaling of λ as p moves is left out. docs/adding_a_recipe.md walks through it.
"""

import torch

import toysuper as ts
from toysuper.sae.recipes.target_l0 import HYPERPARAMETERS as TARGET_L0, TargetL0


@ts.register_recipe
class PAnnealing(ts.Recipe):
    name = "p_annealing"
    hyperparameters = {"lp_coefficient": 0.3, "p_end": 0.5, "anneal_start": 0.2, **TARGET_L0}  # per instance
    positive_hyperparameters = frozenset({"p_end"})
    options = {"anneal": True}  # per SAE; False: p = p_end from the first step
    sparsity_knob = "lp_coefficient"
    controllers = (TargetL0(),)  # with target_l0 > 0, scales the coefficient until the L0 reaches it
    saelens_export = "standard"  # at inference a plain ReLU SAE
    citation = "Karvonen et al. 2024, Measuring Progress in Dictionary Learning ... with Board Game Models"
    train_defaults = {"lr": 3e-3}

    def init_parameters(self, sae, generators):
        for i, generator in enumerate(generators):  # unit decoder rows, the encoder tied to them
            W = torch.randn(sae.d_sae, sae.d_hidden, generator=generator, device=sae.device)
            sae.W_dec[i] = W / W.norm(dim=-1, keepdim=True)
            sae.W_enc[i] = 0.1 * sae.W_dec[i].T
        sae.b_enc.zero_()
        sae.b_dec.zero_()

    def encode(self, sae, x):
        return torch.relu(sae.centred_pre_activations(x))

    def p(self, sae, state):
        """The exponent per instance, (inst,): 1 until anneal_start, then linear down to p_end."""
        if not sae.options["anneal"]:
            return sae.p_end
        progress = 1.0 if state is None else state.progress()  # no state: a finished run
        ramp = ((progress - sae.anneal_start) / (1 - sae.anneal_start).clamp_min(1e-6)).clamp(0, 1)
        return 1 + (sae.p_end - 1) * ramp

    def loss(self, sae, x, state=None):
        f = self.encode(sae, x)  # (batch, inst, d_sae)
        mse = (sae.decode(f) - x).pow(2).sum(-1).mean(0)  # (inst,)
        scaled = f * sae.W_dec.norm(dim=-1)
        active = scaled > 0  # f^p has an infinite slope at 0: take the power where f > 0 only
        sparsity = (torch.where(active, scaled, 1.0).pow(self.p(sae, state)[:, None]) * active).sum(-1).mean(0)
        loss = mse + sae.lp_coefficient * sae.sparsity_multiplier * sparsity  # the multiplier: TargetL0's
        return ts.LossOutput(loss=loss, terms={"mse": mse, "sparsity": sparsity},
                             fired=active.any(0), l0=active.float().sum(-1).mean(0))
