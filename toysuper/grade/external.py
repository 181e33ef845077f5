"""Grading any SAE: the small protocol `evaluate` needs (`GradeableSAE`) and adapters to it from tensors and
callables, objects with a W_dec tensor (SAELens's, sparsify's) and directories in SAELens's format or
toysuper's (README: "Grading an outside SAE").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch

from ..sources import ActivationSource, Batch


@runtime_checkable
class GradeableSAE(Protocol):
    """What `evaluate` needs from an SAE; decode(acts), of the inverse shapes, is optional (without it the
    reconstruction scores are NaN)."""

    def decoder_directions(self) -> torch.Tensor:
        """Decoder directions, (inst, d_sae, d_hidden) or (d_sae, d_hidden); need not be unit."""
        ...

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations, (batch, inst, d_hidden) -> (batch, inst, d_sae) (or without inst)."""
        ...


class TensorSAE:
    """An SAE given as its decoder directions, (d_sae, d_hidden) for one SAE or (inst, d_sae, d_hidden), and
    an encode (and optionally a decode) callable with the matching shapes (see `GradeableSAE`)."""

    def __init__(self, decoder: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor],
                 decode: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if not isinstance(decoder, torch.Tensor) or decoder.ndim not in (2, 3):
            raise TypeError(f"decoder must be a 2-D (d_sae, d_hidden) or 3-D (inst, d_sae, d_hidden) tensor, "
                            f"got {type(decoder).__name__} of shape {tuple(getattr(decoder, 'shape', ()))}")
        if not callable(encode):
            raise TypeError(f"encode must be callable, got {encode!r}")
        if decode is not None and not callable(decode):
            raise TypeError(f"decode must be callable or None, got {decode!r}")
        self.decoder = decoder.detach()
        self.encode, self.decode = encode, decode

    def decoder_directions(self) -> torch.Tensor:
        return self.decoder


class Graded:
    """An SAE seen the way `evaluate` sees it, with an instances axis everywhere: directions (inst, d_sae,
    d_hidden) as given (not normalised), n_instances, d_sae, d_hidden, device, has_decode."""

    def __init__(self, sae, decoder: torch.Tensor):
        decoder = decoder.detach()
        if decoder.ndim not in (2, 3) or decoder.shape[-1] < 1 or decoder.shape[-2] < 1:
            raise ValueError(f"the SAE's decoder must have shape (d_sae, d_hidden) or (inst, d_sae, d_hidden), "
                             f"got {tuple(decoder.shape)}")
        self.sae = sae
        self.single = decoder.ndim == 2  # one SAE whose encode/decode take no instances axis
        self.directions = decoder.unsqueeze(0) if self.single else decoder
        self.n_instances, self.d_sae, self.d_hidden = self.directions.shape
        self.device = self.directions.device
        self.has_decode = callable(getattr(sae, "decode", None))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, inst, d_hidden) -> (batch, inst, d_sae), float32."""
        given = x[:, 0] if self.single else x
        acts = self.sae.encode(given)
        expected = (x.shape[0], self.d_sae) if self.single else (x.shape[0], self.n_instances, self.d_sae)
        if tuple(acts.shape) != expected:  # the shapes the SAE itself saw and returned
            raise ValueError(f"the SAE's encode returned shape {tuple(acts.shape)} for input {tuple(given.shape)}; "
                             f"expected {expected}")
        return (acts.unsqueeze(1) if self.single else acts).float()

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """(batch, inst, d_sae) -> (batch, inst, d_hidden), float32."""
        out = self.sae.decode(acts[:, 0] if self.single else acts)
        return (out.unsqueeze(1) if self.single else out).float()


def as_gradeable(sae) -> Graded:
    """Whatever the user passed as an SAE, seen through the protocol (see the module docstring)."""
    if isinstance(sae, (str, os.PathLike)):
        sae = load_directory(sae)
    elif isinstance(sae, (tuple, list)):
        if not 2 <= len(sae) <= 3:
            raise ValueError(f"sae given as a tuple must be (decoder, encode) or (decoder, encode, decode), "
                             f"got {len(sae)} items")
        sae = TensorSAE(*sae)
    if callable(getattr(sae, "decoder_directions", None)) and callable(getattr(sae, "encode", None)):
        return Graded(sae, sae.decoder_directions())
    if isinstance(getattr(sae, "W_dec", None), torch.Tensor) and callable(getattr(sae, "encode", None)):
        return Graded(sae, sae.W_dec)
    raise TypeError(f"sae must be a toysuper SAE, an object with decoder_directions() and encode(), an object with "
                    f"a W_dec tensor and encode(), a (decoder, encode[, decode]) tuple, or a directory; "
                    f"got {type(sae).__name__}")


def load_directory(path) -> object:
    """An SAE saved in SAELens's format or toysuper's, by the files in `path`."""
    from .saelens_format import CONFIG_FILE as SAELENS_CONFIG, load_saelens
    from ..sae.model import SAE
    from ..weights import CONFIG_FILE

    path = Path(path)
    if (path / SAELENS_CONFIG).is_file():
        return load_saelens(path)
    if (path / CONFIG_FILE).is_file():
        return SAE.load(path, device="cpu")
    raise ValueError(f"sae={str(path)!r} is not a directory holding an SAE (expected {SAELENS_CONFIG} for "
                     f"SAELens's format or {CONFIG_FILE} for toysuper's)")


class OneInstance:
    """One instance of a source, as a source of its own: to grade a single external SAE (e.g. trained by
    SAELens on that instance) against a many-instance source."""

    def __init__(self, source: ActivationSource, instance: int):
        if isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance < source.n_instances:
            raise ValueError(f"instance must be an index below {source.n_instances}, got {instance!r}")
        self.source, self.instance, self._slice = source, instance, slice(instance, instance + 1)
        self.n_instances, self.n_features, self.d_hidden = 1, source.n_features, source.d_hidden
        self.device = source.device
        # The distribution the grader reads (firing probabilities, hierarchy) has all the source's instances;
        # `instances` says which one this source shows, as in ToyModelSource.
        self.dist = getattr(source, "dist", None)
        shown = getattr(source, "instances", None)
        shown = torch.arange(source.n_instances) if shown is None else torch.as_tensor(shown).cpu()
        self.instances = shown[self._slice]

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        batch = self.source.sample(batch_size, generator)
        return Batch(batch.hidden[:, self._slice], batch.features[:, self._slice])

    def true_directions(self) -> torch.Tensor:
        return self.source.true_directions()[self._slice]

    def gradeable(self) -> torch.Tensor:
        return self.source.gradeable()[self._slice]
