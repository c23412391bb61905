"""Inputs as layers compute them: integer and boolean inputs cast to floats.

Shared by every tfpriors layer and model (``layers/``, ``priors.KernelVAE``,
``distill``), so it sits below all of them.
"""

import keras
import numpy as np
from keras import ops

from tfpriors import _validation


def float_inputs(inputs, dtype):
    """``inputs`` cast to ``dtype`` when they hold integers or booleans.

    Keras casts floating inputs to a layer's compute dtype but passes integer
    ones through, where a convolution then fails deep in TensorFlow; a
    weight layer computes in floats whatever the input type.
    """
    if isinstance(inputs, (list, tuple, dict)) or inputs is None:
        return inputs
    if not hasattr(inputs, "dtype") or isinstance(inputs, np.ndarray):
        inputs = _validation.numeric_array(inputs, "inputs", dtype)
    kind = keras.backend.standardize_dtype(inputs.dtype)
    if kind == "string":
        raise TypeError("`inputs` must be numbers; received strings.")
    if "int" in kind or kind == "bool":
        return ops.cast(inputs, dtype)
    return inputs


class FloatInputs:
    """Casts integer and boolean inputs to the compute dtype before the layer runs."""

    def __call__(self, inputs, *args, **kwargs):
        return super().__call__(float_inputs(inputs, self.compute_dtype), *args, **kwargs)
