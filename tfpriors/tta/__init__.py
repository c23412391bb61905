"""Test-time augmentation: batched transforms and JSON policies (predictor and
policy search are still to come).

Example:

>>> from tfpriors import tta
>>> policy = tta.Policy.flip_crop()
>>> augmented = policy.augment(images, draw=0, seed=0)
"""

from tfpriors.tta import transforms
from tfpriors.tta.policy import Policy

__all__ = ["Policy", "transforms"]
