"""toysuper: a testbed where the truth is known.

Plant sparse ground-truth features, train toy models that squeeze them into fewer
dimensions (superposition), fit sparse autoencoders to the hidden activations, and grade
each SAE by how well it recovers the planted features.
"""

from .diagnostics import Thresholds
from .evaluate import Report, evaluate
from .external import GradeableSAE, OneInstance, TensorSAE
from .dictionaries import Dictionary, low_coherence_directions
from .features import ActiveFeatures, FeatureDistribution
from .frequencies import Zipf
from .groups import CorrelatedGroups, ExclusiveGroups
from .hierarchy import Hierarchy
from .magnitudes import Constant, Exponential, FoldedNormal, Uniform
from .matching import cosine_matrix, hungarian, match, mmcs, recovered
from .saelens_bridge import SAELensActivations
from .saelens_format import load_saelens, save_saelens
from .sae import RECIPES, SAE, SAETrainResult, train_sae
from .sources import ActivationSource, Batch, DictionarySource, ToyModelSource, random_directions
from .toy_models import ToyModel, ToyTrainResult, train_toy_model

__version__ = "0.1.0"

__all__ = [
    "ActivationSource", "Batch", "DictionarySource", "FeatureDistribution", "RECIPES", "Report", "SAE",
    "SAETrainResult", "ToyModel", "ToyModelSource", "ToyTrainResult", "cosine_matrix", "evaluate", "hungarian",
    "mmcs", "random_directions", "recovered", "train_sae", "train_toy_model",
    "GradeableSAE", "OneInstance", "SAELensActivations", "TensorSAE", "Thresholds", "load_saelens", "match",
    "save_saelens",
    "ActiveFeatures", "Constant", "CorrelatedGroups", "Dictionary", "ExclusiveGroups", "Exponential", "FoldedNormal",
    "Hierarchy", "Uniform", "Zipf", "low_coherence_directions",
]
