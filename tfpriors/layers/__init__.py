"""Keras layers of tfpriors."""

from tfpriors.layers.adaptive import (ACTBlock, AdaptiveBlock, ProbabilisticACTBlock,
                                      ResidualUnit, SACTBlock)
from tfpriors.layers.kl_layer import DatasetSizeNotSetError, KLLayer
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense, SparseVDLayer

__all__ = ["KLLayer", "DatasetSizeNotSetError", "SparseVDLayer", "SparseVDDense",
           "SparseVDConv2D", "AdaptiveBlock", "ACTBlock", "SACTBlock",
           "ProbabilisticACTBlock", "ResidualUnit"]
