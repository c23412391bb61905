"""Keras layers of tfpriors."""

from tfpriors.layers.adaptive import (
    ACTBlock,
    AdaptiveBlock,
    ProbabilisticACTBlock,
    ResidualUnit,
    SACTBlock,
)
from tfpriors.layers.hyper import (
    HyperVariationalConv2D,
    HyperVariationalDense,
    HyperVariationalLayer,
)
from tfpriors.layers.kl_layer import DatasetSizeNotSetError, KLLayer
from tfpriors.layers.perforated import PerforatedConv2D
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense, SparseVDLayer
from tfpriors.layers.variational import VariationalConv2D, VariationalDense, VariationalLayer

__all__ = [
    "KLLayer",
    "DatasetSizeNotSetError",
    "SparseVDLayer",
    "SparseVDDense",
    "SparseVDConv2D",
    "VariationalLayer",
    "VariationalDense",
    "VariationalConv2D",
    "HyperVariationalLayer",
    "HyperVariationalDense",
    "HyperVariationalConv2D",
    "PerforatedConv2D",
    "AdaptiveBlock",
    "ACTBlock",
    "SACTBlock",
    "ProbabilisticACTBlock",
    "ResidualUnit",
]
