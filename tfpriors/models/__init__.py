"""Reference networks, each buildable with plain Keras or tfpriors layers."""

from tfpriors.models.cnn import small_cnn
from tfpriors.models.lenet import lenet5, lenet_300_100
from tfpriors.models.resnet import AdaptiveModel, act_resnet

__all__ = ["lenet_300_100", "lenet5", "small_cnn", "act_resnet", "AdaptiveModel"]
