"""Test-time augmentation (work in progress: the transforms are in place).

Example:

>>> from tfpriors.tta import transforms
>>> transforms.apply("flip", images, magnitude=0, seed=0)
"""

from tfpriors.tta import transforms

__all__ = ["transforms"]
