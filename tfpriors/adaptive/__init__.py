"""Tools for models with adaptive computation blocks: modes, ponder maps, FLOPs.

Example:

>>> model = tfpriors.models.act_resnet((8, 8, 1), 10, kind="pact", widths=(8, 16, 32))
>>> ...  # train in the default "relaxed" mode
>>> tfpriors.adaptive.set_mode(model, "threshold")
>>> print(tfpriors.adaptive.flops_report(model, x_test))
>>> tfpriors.adaptive.ponder_map(model, x_test[:8], "ponder.png")
"""

from tfpriors.adaptive.tools import (
    FlopsReport,
    adaptive_blocks,
    evaluated_units,
    flops_report,
    ponder_map,
    set_mode,
)

__all__ = [
    "FlopsReport",
    "adaptive_blocks",
    "evaluated_units",
    "flops_report",
    "ponder_map",
    "set_mode",
]
