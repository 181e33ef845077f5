"""The registry of SAE recipes: `RECIPES[name]` is a Recipe instance.

`RECIPES[name].hyperparameters` maps each per-instance hyperparameter of a recipe to its
default; `RECIPES[name].train_defaults` holds the `train_sae` settings the recipe's papers use.
"""

from __future__ import annotations

from .anthropic_2024 import Anthropic2024
from .base import Recipe
from .batchtopk import BatchTopK
from .gated import Gated
from .jumprelu import JumpReLU
from .matryoshka import MatryoshkaBatchTopK
from .relu_l1 import ReluL1
from .topk import TopK

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe for recipe in (Anthropic2024(), ReluL1(), TopK(), BatchTopK(), JumpReLU(), Gated(),
                                        MatryoshkaBatchTopK())
}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


__all__ = ["RECIPES", "Recipe", "get_recipe"]
