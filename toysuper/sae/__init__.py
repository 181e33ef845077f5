"""Sparse autoencoders: the module, its recipes and its training loop."""

from .model import SAE
from .recipes import RECIPES, LossOutput, Recipe, get_recipe, register_recipe
from .state import TrainState
from .train import FROM_RECIPE, TRAIN_DEFAULTS, SAETrainResult, train_sae

__all__ = ["SAE", "LossOutput", "RECIPES", "Recipe", "get_recipe", "register_recipe", "SAETrainResult",
           "TRAIN_DEFAULTS", "FROM_RECIPE", "TrainState", "train_sae"]
