"""Broadcasting a user's per-feature or per-instance value to one shape, (inst, n_features)."""

from __future__ import annotations

import torch

from ..checks import as_tensor


def per_instance_per_feature(name: str, value, n_instances: int, n_features: int, device) -> torch.Tensor:
    """`value` (a number, (n_features,), (n_instances, 1) or (n_instances, n_features)) as (inst, n_features)."""
    tensor = as_tensor(name, value, device)
    shape = tuple(tensor.shape)
    if shape not in {(), (n_features,), (n_instances, 1), (1, n_features), (n_instances, n_features)}:
        raise ValueError(
            f"{name} has shape {shape}; expected a number, ({n_features},) per feature, "
            f"({n_instances}, 1) per instance or ({n_instances}, {n_features}) "
            f"(n_instances={n_instances}, n_features={n_features})"
        )
    return tensor.expand(n_instances, n_features).contiguous()


def per_instance(name: str, value, n_instances: int, device) -> torch.Tensor:
    """`value` (a number or one per instance, (n_instances,)) as (inst, 1)."""
    tensor = as_tensor(name, value, device)
    if tensor.ndim > 1 or (tensor.ndim == 1 and len(tensor) not in (1, n_instances)):
        raise ValueError(f"{name} must be a number or one value per instance ({n_instances},), "
                         f"got shape {tuple(tensor.shape)}")
    return tensor.reshape(-1, 1).expand(n_instances, 1).contiguous()
