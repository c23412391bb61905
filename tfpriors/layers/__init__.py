"""Keras layers of tfpriors.

- Weight priors: :class:`SparseVDDense` / :class:`SparseVDConv2D` (Sparse
  Variational Dropout), :class:`VariationalDense` / :class:`VariationalConv2D`
  (a Gaussian posterior and any :class:`tfpriors.priors.Prior`) and
  :class:`HyperVariationalDense` / :class:`HyperVariationalConv2D` (one layer
  for every KL weight lambda). Their KL terms go through :class:`KLLayer`.
- Structured pruning: :class:`StructuredBayesianPruning` (whole units and
  filters, by multiplicative log-normal noise).
- Faster convolutions: :class:`PerforatedConv2D` (PerforatedCNNs).
- Adaptive computation: :class:`ACTBlock`, :class:`SACTBlock` and
  :class:`ProbabilisticACTBlock` over :class:`ResidualUnit` s.

All of them are registered Keras serializables: models using them save to and
load from ``.keras`` files.
"""

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
from tfpriors.layers.structured import StructuredBayesianPruning
from tfpriors.layers.variational import VariationalConv2D, VariationalDense, VariationalLayer

__all__ = [
    "KLLayer",
    "DatasetSizeNotSetError",
    "SparseVDLayer",
    "SparseVDDense",
    "SparseVDConv2D",
    "StructuredBayesianPruning",
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
