"""Tools for models with adaptive computation blocks: modes, ponder maps, FLOPs.

:func:`set_mode` switches probabilistic ACT blocks between their relaxed,
discrete and threshold modes; :func:`evaluated_units` and :func:`ponder_map`
show where the blocks spend computation; :func:`flops_report` sums it up.

Example:
>>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
>>> model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2, 2), widths=(4, 8),
...                                    kind="pact")
>>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = model.fit(x[:64], y[:64], batch_size=32, verbose=0)  # the "relaxed" mode
>>> tfpriors.adaptive.set_mode(model, "threshold")
2
>>> print(tfpriors.adaptive.flops_report(model, x_test[:32]))
FLOPs (multiply-adds per image): ... of plain ... (...%)
  stage0_pact          ... / 2 units per position, ... of ...
  stage1_pact          ... / 1 units per position, ... of ...
>>> figure = tfpriors.adaptive.ponder_map(model, x_test[:4], "ponder.png")
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
