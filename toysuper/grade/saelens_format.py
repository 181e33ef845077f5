"""SAELens's on-disk SAE format (SAELens 6), read and written without importing SAELens.

A directory holds cfg.json (architecture: standard | topk | jumprelu | gated, d_in, d_sae, dtype,
apply_b_dec_to_input, normalize_activations; k and rescale_acts_by_decoder_norm for topk; metadata) and
sae_weights.safetensors (W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_dec (d_in,), and (d_sae,) vectors: b_enc,
threshold for jumprelu, b_gate, b_mag and r_mag for gated). Inference, with x' = x - b_dec if
apply_b_dec_to_input else x:
    standard: f = ReLU(x' W_enc + b_enc)
    topk:     p = x' W_enc + b_enc (times ‖W_dec,j‖ when rescale_acts_by_decoder_norm); f = ReLU of the top k of p
    jumprelu: p = x' W_enc + b_enc; f = ReLU(p) where p > threshold, else 0 (Rajamanoharan et al. 2024, Gemma Scope)
    gated:    f = [x' W_enc + b_gate > 0] · ReLU(x' (W_enc ⊙ exp(r_mag)) + b_mag) (Rajamanoharan et al. 2024)
    x̂ = f W_dec + b_dec (f / ‖W_dec,j‖ for topk with rescale_acts_by_decoder_norm)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..devices import resolve_device
from ..sae.recipes import RECIPES

CONFIG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
FORMAT_VERSION = "6.0.0"  # written as metadata.sae_lens_version: the first SAELens version of this format

_DTYPES = {name: getattr(torch, name) for name in ("float32", "float64", "float16", "bfloat16")}
_STANDARD = ("W_enc", "b_enc", "W_dec", "b_dec")
_PARAMETERS = {"standard": _STANDARD, "topk": _STANDARD, "jumprelu": _STANDARD + ("threshold",),
               "gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec")}
_IDENTITY_NORMALISATIONS = ("none", "expected_average_only_in")  # identity at inference, as in SAELens


class SAELensSAE(nn.Module):
    """One SAE read from a SAELens directory, with SAELens's shapes (no instances axis)."""

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.config = config
        self.architecture = config["architecture"]
        self.d_in, self.d_sae = config["d_in"], config["d_sae"]
        self.apply_b_dec_to_input = bool(config.get("apply_b_dec_to_input", True))
        self.k = config.get("k")
        self.rescale_acts_by_decoder_norm = bool(config.get("rescale_acts_by_decoder_norm", False))
        for name in _PARAMETERS[self.architecture]:
            setattr(self, name, nn.Parameter(tensors[name], requires_grad=False))

    def decoder_directions(self) -> torch.Tensor:
        """Decoder rows, (d_sae, d_in)."""
        return self.W_dec

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent activations, (..., d_in) -> (..., d_sae)."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        if self.architecture == "gated":
            gate = (x @ self.W_enc + self.b_gate) > 0
            return gate * torch.relu(x @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
        pre = x @ self.W_enc + self.b_enc
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        if self.rescale_acts_by_decoder_norm:  # topk
            pre = pre * self.W_dec.norm(dim=-1)
        values, index = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, index, values.relu())

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction, (..., d_sae) -> (..., d_in)."""
        acts = acts.to(self.W_dec.dtype)
        if self.architecture == "topk" and self.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        return acts @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _read_config(path: Path) -> dict:
    config = json.loads((path / CONFIG_FILE).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_FILE} must hold a JSON object, got {type(config).__name__}")
    # SAELens < 6 wrote "activation_fn_str" / "activation_fn_kwargs" and no architecture.
    activation = config.get("activation_fn", config.get("activation_fn_str"))
    config.setdefault("architecture", "topk" if activation == "topk" else "standard")
    if config["architecture"] == "topk" and "k" not in config:
        config["k"] = (config.get("activation_fn_kwargs") or {}).get("k")
    if isinstance(config.get("normalize_activations"), bool) or config.get("normalize_activations") is None:
        config["normalize_activations"] = "expected_average_only_in" if config.get("normalize_activations") else "none"
    return config


def load_saelens(path, device=None) -> SAELensSAE:
    """Read an SAE saved in SAELens's format. Missing or corrupt files, another architecture, a normalisation
    that needs the input's statistics at inference (layer_norm, ...) or weights that do not fit raise ValueError."""
    path, device = Path(path), torch.device("cpu") if device is None else resolve_device(device)
    try:
        config = _read_config(path)
        tensors = load_file(str(path / WEIGHTS_FILE))
    except (OSError, ValueError, SafetensorError) as error:
        raise ValueError(f"cannot read a SAELens SAE from {str(path)!r}: {error}") from error
    architecture = config["architecture"]
    if not isinstance(architecture, str) or architecture not in _PARAMETERS:
        raise ValueError(f"{str(path)!r}: architecture {architecture!r} is not supported; supported: "
                         f"{sorted(_PARAMETERS)} (a BatchTopK SAE is saved by SAELens's save_inference_model "
                         f"as jumprelu)")
    if config["normalize_activations"] not in _IDENTITY_NORMALISATIONS:
        raise ValueError(f"{str(path)!r}: normalize_activations={config['normalize_activations']!r} is not "
                         f"supported; fold it into the weights first")
    for key in ("d_in", "d_sae"):
        if isinstance(config.get(key), bool) or not isinstance(config.get(key), int) or config[key] < 1:
            raise ValueError(f"{str(path)!r}: {CONFIG_FILE} needs a whole number {key} >= 1, got {config.get(key)!r}")
    k = config.get("k")
    if architecture == "topk" and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= config["d_sae"]):
        raise ValueError(f"{str(path)!r}: a topk SAE needs a whole number k in [1, d_sae={config['d_sae']}] in "
                         f"{CONFIG_FILE}, got k={k!r}")
    if "log_threshold" in tensors and "threshold" not in tensors:  # older JumpReLU checkpoints
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    dtype = _DTYPES.get(str(config.get("dtype", "float32")).removeprefix("torch."), torch.float32)
    d_in, d_sae = config["d_in"], config["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for name in _PARAMETERS[architecture]:
        if name not in tensors:
            raise ValueError(f"{str(path)!r}: {WEIGHTS_FILE} has no {name!r} (has {sorted(tensors)})")
        expected = shapes.get(name, (d_sae,))
        if tuple(tensors[name].shape) != expected:
            raise ValueError(f"{str(path)!r}: {name} has shape {tuple(tensors[name].shape)}, but {CONFIG_FILE} "
                             f"(d_in={d_in}, d_sae={d_sae}) needs {expected}")
        if not torch.isfinite(tensors[name]).all():
            raise ValueError(f"{str(path)!r}: {name} in {WEIGHTS_FILE} contains "
                             f"{int((~torch.isfinite(tensors[name])).sum())} NaN or infinite value(s)")
        tensors[name] = tensors[name].to(device=device, dtype=dtype)
    return SAELensSAE(config, tensors)


ARCHITECTURES = ("standard", "topk", "batchtopk", "jumprelu", "gated")  # the values of `Recipe.saelens_export`


def save_saelens(sae, directory, instance: int = 0) -> Path:
    """Write one instance of a toysuper `SAE` as a SAELens SAE directory (`sae_lens.SAE.load_from_disk` reads it,
    as do `load_saelens` and `evaluate`); its recipe must have a SAELens counterpart (`saelens_export`).

    Every recipe computes pre = W_enc (x - b_dec) + b_enc, or W_enc x + b_enc where it does not centre its
    input (`Recipe.centres_input`: apply_b_dec_to_input), then by its export: standard ReLU(pre); topk
    ReLU(top-k of pre); batchtopk ReLU(pre) where > sae.threshold (a jumprelu of one threshold); jumprelu
    pre where pre > exp(sae.log_threshold); gated [pre > 0] ReLU(e^r_mag (pre - b_enc) + b_mag), b_gate = b_enc.
    """
    if isinstance(instance, bool) or not isinstance(instance, int) or not 0 <= instance < sae.n_instances:
        raise ValueError(f"instance must be an index below n_instances={sae.n_instances}, got {instance!r}")
    recipe, export = sae.recipe.name, sae.recipe.saelens_export
    if export not in ARCHITECTURES:
        exportable = sorted(name for name, known in RECIPES.items() if known.saelens_export in ARCHITECTURES)
        raise ValueError(f"recipe {recipe!r} has no SAELens counterpart (its saelens_export is "
                         f"{export!r}); exportable: {exportable}")
    tensors = {"W_enc": sae.W_enc[instance], "W_dec": sae.W_dec[instance], "b_dec": sae.b_dec[instance],
               "b_enc": sae.b_enc[instance]}
    entries = {"apply_b_dec_to_input": sae.recipe.centres_input,
               "architecture": "jumprelu" if export == "batchtopk" else export}
    if export == "topk":
        entries.update(k=int(sae.k[instance]), rescale_acts_by_decoder_norm=False)
    elif export == "batchtopk":
        tensors["threshold"] = sae.threshold[instance].expand(sae.d_sae)
    elif export == "jumprelu":
        tensors["threshold"] = sae.log_threshold[instance].exp()
    elif export == "gated":
        tensors.update(b_gate=tensors.pop("b_enc"), b_mag=sae.b_mag[instance], r_mag=sae.r_mag[instance])
    config = {"d_in": sae.d_hidden, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": True, "normalize_activations": "none", "reshape_activations": "none",
              **entries,
              "metadata": {"sae_lens_version": FORMAT_VERSION, "model_name": "toysuper", "hook_name": "hidden",
                           "toysuper": {"recipe": recipe, "instance": instance,
                                        **{name: values[instance] for name, values in
                                           sae.hyperparameter_values().items()}}}}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().float().contiguous().cpu() for name, tensor in tensors.items()},
              str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    return directory
