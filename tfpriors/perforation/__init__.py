"""Perforated convolutions (Figurnov et al., 2016): masks, whole-model perforation.

:func:`perforate` turns chosen convolutions of a model into
:class:`~tfpriors.layers.PerforatedConv2D` layers at given rates;
:func:`greedy_perforation` chooses the rates itself, towards a measured speedup
within an accuracy budget; the mask builders (:func:`make_mask` and the
``*_mask`` functions) say which output positions are computed.

Example:
>>> model = tfpriors.models.small_cnn((8, 8, 1), 10, width=4)
>>> fast = tfpriors.perforation.perforate(model, rates={"conv2": 0.5}, mask="lattice")
>>> fast.get_layer("conv2").effective_rate
0.5
>>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
>>> fast(x).shape
TensorShape([2, 10])
>>> figure = tfpriors.perforation.plot_mask(fast.get_layer("conv2"), "mask.png")
"""

from tfpriors.perforation.api import (
    PerforationReport,
    greedy_perforation,
    perforable_layers,
    perforate,
    plot_mask,
)
from tfpriors.perforation.masks import (
    MASK_KINDS,
    PerforationMask,
    check_rate,
    grid_mask,
    impact_scores,
    kept_count,
    lattice_mask,
    lattice_rates,
    make_mask,
    mask_from_scores,
    pooling_counts,
    structure_mask,
    uniform_mask,
)

__all__ = [
    "MASK_KINDS",
    "PerforationMask",
    "PerforationReport",
    "check_rate",
    "greedy_perforation",
    "grid_mask",
    "impact_scores",
    "kept_count",
    "lattice_mask",
    "lattice_rates",
    "make_mask",
    "mask_from_scores",
    "perforable_layers",
    "perforate",
    "plot_mask",
    "pooling_counts",
    "structure_mask",
    "uniform_mask",
]
