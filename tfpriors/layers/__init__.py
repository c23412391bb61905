"""Keras layers of tfpriors."""

from tfpriors.layers.kl_layer import DatasetSizeNotSetError, KLLayer
from tfpriors.layers.perforated import PerforatedConv2D
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense, SparseVDLayer

__all__ = ["KLLayer", "DatasetSizeNotSetError", "SparseVDLayer", "SparseVDDense",
           "SparseVDConv2D", "PerforatedConv2D"]
