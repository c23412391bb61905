"""Test-time augmentation: batched transforms, JSON policies, a predictor for
models and ensembles, Greedy Policy Search and MeTTA mean embeddings.

Example:

>>> from tfpriors import tta
>>> policy = tta.Policy.flip_crop()
>>> augmented = policy.augment(images, draw=0, seed=0)
"""

from tfpriors.tta import transforms
from tfpriors.tta.metta import linear_probe, mean_embeddings
from tfpriors.tta.policy import Policy
from tfpriors.tta.predictor import TTAPredictor
from tfpriors.tta.search import GreedyPolicySearch

__all__ = [
    "GreedyPolicySearch",
    "Policy",
    "TTAPredictor",
    "linear_probe",
    "mean_embeddings",
    "transforms",
]
