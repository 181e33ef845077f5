"""toysuper: a testbed where the truth is known.

Plant sparse ground-truth features, train toy models that squeeze them into fewer
dimensions (superposition), fit sparse autoencoders to the hidden activations, and grade
each SAE by how well it recovers the planted features.
"""

from .evaluate import Report, evaluate
from .features import FeatureDistribution
from .matching import cosine_matrix, hungarian, mmcs, recovered
from .sae import RECIPES, SAE, SAETrainResult, train_sae
from .sources import ActivationSource, Batch, DictionarySource, ToyModelSource, random_directions
from .toy_models import ToyModel, ToyTrainResult, train_toy_model

__version__ = "0.1.0"

__all__ = [
    "ActivationSource", "Batch", "DictionarySource", "FeatureDistribution", "RECIPES", "Report", "SAE",
    "SAETrainResult", "ToyModel", "ToyModelSource", "ToyTrainResult", "cosine_matrix", "evaluate", "hungarian",
    "mmcs", "random_directions", "recovered", "train_sae", "train_toy_model",
]
