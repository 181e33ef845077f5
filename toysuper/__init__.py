"""toysuper: a testbed where the truth is known.

Plant sparse ground-truth features, train toy models that squeeze them into fewer
dimensions (superposition), fit sparse autoencoders to the hidden activations, and grade
each SAE by how well it recovers the planted features.
"""

from .grade.diagnostics import Thresholds
from .grade.evaluate import Report, evaluate
from .grade.external import GradeableSAE, OneInstance, TensorSAE
from .truth.dictionaries import Dictionary, low_coherence_directions
from .truth.correlation import LowRankCorrelation
from .truth.distribution import FeatureDistribution, SparseFeatures
from .truth.frequencies import Zipf
from .truth.groups import CorrelatedGroups, ExclusiveGroups
from .truth.hierarchy import Hierarchy
from .truth.magnitudes import Constant, Exponential, FoldedNormal, TruncatedNormal, Uniform
from .grade.matching import cosine_matrix, hungarian, match, mmcs, recovered
from .grade.saelens_bridge import SAELensActivations
from .grade.saelens_format import load_saelens, save_saelens
from .sae import RECIPES, SAE, LossOutput, Recipe, SAETrainResult, get_recipe, register_recipe, train_sae
from .devices import instance_generators
from .sources import ActivationSource, Batch, DictionarySource, SAELensWorld, ToyModelSource
from .truth.dictionaries import random_directions
from .toy.model import ToyModel
from .toy.train import ToyTrainResult, train_toy_model
from . import worlds
from .validate import validate

__version__ = "0.1.0"

__all__ = [
    "ActivationSource", "Batch", "DictionarySource", "FeatureDistribution", "RECIPES", "Report", "SAE",
    "SAETrainResult", "ToyModel", "ToyModelSource", "ToyTrainResult", "cosine_matrix", "evaluate", "hungarian",
    "mmcs", "random_directions", "recovered", "train_sae", "train_toy_model",
    "GradeableSAE", "OneInstance", "SAELensActivations", "TensorSAE", "Thresholds", "load_saelens", "match",
    "save_saelens",
    "Constant", "CorrelatedGroups", "Dictionary", "ExclusiveGroups", "Exponential", "FoldedNormal",
    "Hierarchy", "LowRankCorrelation", "SparseFeatures", "TruncatedNormal", "Uniform", "Zipf", "instance_generators",
    "low_coherence_directions", "worlds", "SAELensWorld", "LossOutput", "Recipe", "get_recipe", "register_recipe",
    "validate",
]
