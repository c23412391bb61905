"""tfpriors: prior knowledge for Keras 3 models, shipped to phones.

Variational layers and their priors (:mod:`~tfpriors.layers`,
:mod:`~tfpriors.priors`: Sparse Variational Dropout, the Deep Weight Prior,
lambda-hypernetworks), perforated convolutions (:mod:`~tfpriors.perforation`),
adaptive computation time (:mod:`~tfpriors.adaptive`), SGLD ensembles
distilled into one network (:mod:`~tfpriors.distill`), test-time augmentation
and calibration metrics (:mod:`~tfpriors.tta`, :mod:`~tfpriors.calibration`),
and export to TFLite (:mod:`~tfpriors.export`). Models train with plain
``model.fit``; :mod:`~tfpriors.callbacks` schedule the KL term and log the
sparsity, and :func:`compression_report` tells what was removed.

Example:
Sparse VD LeNet-300-100 on the bundled 8x8 digits (a real run trains for
100 epochs or more):

>>> import keras, tfpriors
>>> (x, y), (x_test, y_test) = tfpriors.datasets.load_digits()
>>> model = tfpriors.models.lenet_300_100((64,), 10, kind="sparse_vd")
>>> tfpriors.set_dataset_size(model, len(x))
3
>>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> history = model.fit(x[:256], y[:256], epochs=2, batch_size=128, verbose=0,
...                     callbacks=[tfpriors.callbacks.KLWarmup(0, 10)])
>>> report = tfpriors.compression_report(model)
>>> report.total_weights, bool(1.0 <= report.total_compression)
(50200, True)
>>> print(report)
layer  kind               weights       kept  sparsity  compression
fc1    SparseVDDense       19,200        ...
fc2    SparseVDDense       30,000        ...
fc3    SparseVDDense        1,000        ...
total                      50,200        ...
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
from tfpriors.structured import structured  # noqa: E402

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
    "structured",
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
