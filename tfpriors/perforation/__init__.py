"""Perforated convolutions (Figurnov et al., 2016): masks, whole-model perforation.

Example:

>>> fast = tfpriors.perforation.perforate(model, rates={"conv2": 0.5}, mask="lattice")
>>> fast = tfpriors.perforation.greedy_perforation(model, (x_val, y_val), target_speedup=2.0,
...                                                max_accuracy_drop=0.01)
>>> print(fast.perforation_report)
>>> tfpriors.perforation.plot_mask(fast.get_layer("conv2"), "mask.png")
"""

from tfpriors.perforation.api import (
    PerforationReport,
    greedy_perforation,  # noqa: E402
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
