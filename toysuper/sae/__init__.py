"""Sparse autoencoders: the module, its recipes and its training loop."""

from .model import SAE
from .recipes import RECIPES, Recipe, get_recipe
from .train import SAETrainResult, train_sae

__all__ = ["SAE", "RECIPES", "Recipe", "get_recipe", "SAETrainResult", "train_sae"]
