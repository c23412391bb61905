"""Export to TFLite: one path for every tfpriors layer family.

:func:`to_tflite` turns a Keras model (with tfpriors layers or without) into a
``.tflite`` file of builtin ops: :func:`inference_model` replaces every tfpriors
layer by its deterministic inference form, :func:`shrink` removes dead units and
filters, and the file is verified on a TFLite runtime. Problems are reported as
:class:`ExportError`; the result is described by an :class:`ExportReport`.

Example:
>>> (x_train, y_train), (x_test, y_test) = tfpriors.datasets.load_digits()
>>> model = keras.Sequential([keras.Input((64,)),
...                           tfpriors.layers.SparseVDDense(16, activation="relu"),
...                           tfpriors.layers.SparseVDDense(10)])
>>> report = tfpriors.export.to_tflite(model, "digits.tflite", verify_data=x_test[:100])
>>> print(report)
TFLite export: digits.tflite
  size            ... bytes (dense float32 export ..., ...x smaller)
  ops             FULLY_CONNECTED
  quantization    none
  sparse storage  no
  shrink          no dead units
  runtime         ... (XNNPACK, 1 thread)
  max |diff|      ... (vs Keras)
  top-1 agreement 100.00%
  latency         ... ms median, 1 thread (dense float32 export ... ms, ...x faster)
"""

from tfpriors.export.inference import ExportError, inference_model
from tfpriors.export.shrink import ShrinkSummary, shrink
from tfpriors.export.tflite import ExportReport, to_tflite

__all__ = ["ExportError", "ExportReport", "ShrinkSummary", "inference_model", "shrink", "to_tflite"]
