"""The registry of SAE recipes: `RECIPES[name]` is a Recipe instance."""

from __future__ import annotations

from .anthropic_2024 import Anthropic2024
from .base import Recipe

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (Anthropic2024(),)}


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`, or a ValueError listing the known ones."""
    if name not in RECIPES:
        raise ValueError(f"recipe must be one of {sorted(RECIPES)}, got {name!r}")
    return RECIPES[name]


__all__ = ["RECIPES", "Recipe", "get_recipe"]
