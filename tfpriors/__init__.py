"""tfpriors: prior knowledge for Keras 3 models, shipped to phones.

Example:

>>> import keras, tfpriors
>>> (x, y), _ = tfpriors.datasets.load_digits()
>>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
>>> tfpriors.set_dataset_size(model, len(x))
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> model.fit(x, y, epochs=50, callbacks=[tfpriors.callbacks.KLWarmup(0, 10)])
>>> print(tfpriors.compression_report(model))
"""

from tfpriors._backend import check_backend as _check_backend

_check_backend()

# The layers use perforation's masks and perforation's tools use the layers (each
# module imports only modules below it): importing `perforation` first loads its masks
# before `layers` needs them, whichever submodule a user imports (this file runs first).
from tfpriors import perforation  # noqa: E402, I001

# isort: split
from tfpriors import (  # noqa: E402
    adaptive,
    calibration,
    callbacks,
    datasets,
    distill,
    distributed,
    export,
    graph,
    hyper,
    initializers,
    io,
    layers,
    models,
    ops,
    plotting,
    priors,
    tta,
)
from tfpriors.compression import CompressionReport, compression_report  # noqa: E402
from tfpriors.layers.kl_layer import set_dataset_size, set_kl_weight  # noqa: E402
from tfpriors.sparsify import sparsify  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "calibration",
    "callbacks",
    "datasets",
    "export",
    "layers",
    "models",
    "plotting",
    "priors",
    "tta",
    "CompressionReport",
    "compression_report",
    "set_dataset_size",
    "set_kl_weight",
    "sparsify",
    "adaptive",
    "distill",
    "distributed",
    "graph",
    "hyper",
    "initializers",
    "io",
    "ops",
    "perforation",
]
