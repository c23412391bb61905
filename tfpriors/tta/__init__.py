"""Test-time augmentation (TTA) for image classifiers and their ensembles.

Batched image transforms (:mod:`~tfpriors.tta.transforms`), policies of
transforms saved as JSON (:class:`Policy`), a predictor averaging models and
ensembles over augmentations (:class:`TTAPredictor`), Greedy Policy Search
(:class:`GreedyPolicySearch`) and MeTTA mean embeddings
(:func:`mean_embeddings`, judged with :func:`linear_probe`).

Example:
>>> from tfpriors import tta
>>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
>>> policy = tta.Policy.flip_crop()
>>> policy.augment(x[:16], draw=0, seed=0).shape
TensorShape([16, 8, 8, 1])
>>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
>>> predictor = tta.TTAPredictor(model, policy, num_samples=4)
>>> predictor.predict(x[:100]).shape
(100, 10)
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
