"""SAE recipes and their registry: `RECIPES[name]` is a Recipe instance; the built-ins are registered
with `register_recipe`, as an outside recipe is (docs/adding_a_recipe.md)."""

from __future__ import annotations

from .anthropic_2024 import Anthropic2024
from .base import LossOutput, Recipe
from .batchtopk import BatchTopK
from .gated import Gated
from .jumprelu import JumpReLU
from .matryoshka import MatryoshkaBatchTopK
from .registry import RECIPES, get_recipe, recipe_path, register_recipe
from .relu_l1 import ReluL1
from .topk import TopK

for _builtin in (Anthropic2024, ReluL1, TopK, BatchTopK, JumpReLU, Gated, MatryoshkaBatchTopK):
    register_recipe(_builtin)

__all__ = ["LossOutput", "RECIPES", "Recipe", "get_recipe", "recipe_path", "register_recipe"]
