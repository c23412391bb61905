"""Keras layers of tfpriors."""

from tfpriors.layers.hyper import (HyperVariationalConv2D, HyperVariationalDense,  # noqa: F401
                                   HyperVariationalLayer)
from tfpriors.layers.kl_layer import DatasetSizeNotSetError, KLLayer
from tfpriors.layers.sparse_vd import SparseVDConv2D, SparseVDDense, SparseVDLayer

__all__ = ["KLLayer", "DatasetSizeNotSetError", "SparseVDLayer", "SparseVDDense",
           "SparseVDConv2D", "HyperVariationalLayer", "HyperVariationalDense",
           "HyperVariationalConv2D"]
