"""Train with SAELens's own trainer on toysuper's ground truth, then grade with `evaluate`.

SAELens's `SAETrainer` takes its data as a `DataProvider`: an iterator of activation
batches of shape (batch, d_in). `SAELensActivations` is that iterator over one instance of
a toysuper source, so the SAE SAELens trains sees the same hidden activations whose true
features `evaluate` knows (install the extra: `pip install "toysuper[saelens]"`):

    from sae_lens import SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    data = ts.SAELensActivations(source, batch_size=1024, instance=0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=source.d_hidden, d_sae=256, k=4))
    config = SAETrainerConfig(total_training_samples=300 * 1024, train_batch_size_samples=1024,
                              lr=3e-3, lr_end=3e-3, logger=LoggingConfig(log_to_wandb=False))
    SAETrainer(cfg=config, sae=sae, data_provider=data).fit()
    report = ts.evaluate(sae, ts.OneInstance(source, 0))     # or sae.save_inference_model(dir); evaluate(dir, ...)

This module does not import SAELens: the iterator is plain torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..checks import positive_int
from ..devices import make_generator, resolve_device
from ..sources import ActivationSource


class SAELensActivations(Iterator[torch.Tensor]):
    """Endless batches of one source instance's hidden activations, (batch_size, d_hidden).

    Args:
        source: any toysuper activation source.
        batch_size: samples per batch (SAELens's train_batch_size_samples).
        instance: which of the source's instances to read.
        seed: seed of the stream (grading's held-out samples use another by default).
        device: where the batches are delivered (SAELens's trainer device); the source's by default.
    """

    def __init__(self, source: ActivationSource, batch_size: int, instance: int = 0, seed: int | None = 0,
                 device=None):
        self.batch_size = positive_int("batch_size", batch_size)
        if isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance < source.n_instances:
            raise ValueError(f"instance must be an index below the source's n_instances={source.n_instances}, "
                             f"got {instance!r}")
        self.source, self.instance = source, instance
        self.device = source.device if device is None else resolve_device(device)
        self.generator = make_generator(seed, source.device)
        self.d_in = source.d_hidden

    @torch.no_grad()
    def __next__(self) -> torch.Tensor:
        hidden = self.source.sample(self.batch_size, self.generator).hidden[:, self.instance]
        return hidden.to(self.device).contiguous()
