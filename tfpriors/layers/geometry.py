"""The geometry of dense and 2D-convolution kernels, shared by our weight layers.

Sparse VD, variational and hypernetwork layers differ in how they
parametrize and sample their kernels, not in what a Dense or a Conv2D is:
the argument checks, the input check, the kernel and output shapes, the
linear map itself and the plain Keras layer a layer exports to live here
once. A layer mixes one of these in before its base class:
``class VariationalDense(DenseGeometry, VariationalLayer)``.
"""

import abc
import math

import keras
from keras import ops

from tfpriors import _validation
from tfpriors._inputs import FloatInputs, float_inputs  # noqa: F401  (re-exported)


class DenseGeometry(FloatInputs):
    """``units`` outputs from the last axis of the inputs, like ``keras.layers.Dense``."""

    def _init_geometry(self, units):
        self.units = _validation.positive_int(units, "units")

    def _kernel_shape_from(self, input_shape):
        """Checks ``input_shape``; returns ``(kernel_shape, out_dim)`` and sets input_spec."""
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"`inputs` of {type(self).__name__} '{self.name}' must have rank >= 2 "
                f"with a known last dimension; received shape {tuple(input_shape)}."
            )
        input_dim = int(input_shape[-1])
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: input_dim})
        return (input_dim, self.units), self.units

    def _linear(self, inputs, kernel):
        return ops.matmul(inputs, kernel)

    def _add_bias(self, outputs):
        return outputs if self.bias is None else outputs + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def plain_layer(self):
        """The builtin ``keras.layers.Dense`` with this layer's shape (no weights)."""
        return keras.layers.Dense(
            self.units, activation=self.activation, use_bias=self.use_bias, name=self.name
        )

    def get_config(self):
        config = super().get_config()
        config["units"] = self.units
        return config


class Conv2DGeometry(FloatInputs):
    """A 2D convolution, like ``keras.layers.Conv2D`` with ``groups=1``.

    ``data_format`` is ``"channels_last"`` unless a layer accepts
    ``"channels_first"`` too (``_init_geometry(..., data_formats=...)``).
    """

    def _init_geometry(
        self,
        filters,
        kernel_size,
        strides,
        padding,
        dilation_rate,
        data_format="channels_last",
        data_formats=("channels_last",),
    ):
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.int_tuple(kernel_size, "kernel_size", 2)
        self.strides = _validation.int_tuple(strides, "strides", 2)
        self.padding = _validation.one_of(padding, "padding", {"valid", "same"})
        self.data_format = _validation.one_of(
            data_format or keras.config.image_data_format(), "data_format", set(data_formats)
        )
        self.dilation_rate = _validation.int_tuple(dilation_rate, "dilation_rate", 2)
        self._configurable_data_format = len(data_formats) > 1
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "`strides` > 1 together with `dilation_rate` > 1 is not "
                f"supported; received strides={self.strides}, "
                f"dilation_rate={self.dilation_rate}."
            )

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _kernel_shape_from(self, input_shape):
        """Checks ``input_shape``; returns ``(kernel_shape, out_dim)`` and sets input_spec."""
        if len(input_shape) != 4 or input_shape[self._channel_axis] is None:
            layout = (
                "(batch, height, width, channels)"
                if self._channel_axis == -1
                else "(batch, channels, height, width)"
            )
            raise ValueError(
                f"`inputs` of {type(self).__name__} '{self.name}' must have rank 4 "
                f"{layout} with known channels; received shape {tuple(input_shape)}."
            )
        in_channels = int(input_shape[self._channel_axis])
        self.input_spec = keras.InputSpec(ndim=4, axes={self._channel_axis: in_channels})
        return self.kernel_size + (in_channels, self.filters), self.filters

    def _linear(self, inputs, kernel):
        # TensorFlow's CPU convolution only supports NHWC, so channels-first
        # inputs are transposed around it.
        if self.data_format == "channels_first":
            inputs = ops.transpose(inputs, (0, 2, 3, 1))
        outputs = ops.conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=self.dilation_rate,
        )
        if self.data_format == "channels_first":
            outputs = ops.transpose(outputs, (0, 3, 1, 2))
        return outputs

    def _add_bias(self, outputs):
        if self.bias is None:
            return outputs
        if self.data_format == "channels_first":
            return outputs + ops.reshape(self.bias, (1, self.filters, 1, 1))
        return outputs + self.bias

    def compute_output_shape(self, input_shape):
        spatial_axes = (1, 2) if self.data_format == "channels_last" else (2, 3)
        spatial = []
        for axis, k, s, d in zip(spatial_axes, self.kernel_size, self.strides, self.dilation_rate):
            size = input_shape[axis]
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(math.ceil(size / s))
            else:
                spatial.append((size - d * (k - 1) - 1) // s + 1)
        if self.data_format == "channels_last":
            return (input_shape[0], *spatial, self.filters)
        return (input_shape[0], self.filters, *spatial)

    def plain_layer(self):
        """The builtin ``keras.layers.Conv2D`` with this layer's shape (no weights)."""
        return keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilation_rate=self.dilation_rate,
            activation=self.activation,
            use_bias=self.use_bias,
            name=self.name,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "dilation_rate": self.dilation_rate,
            }
        )
        if self._configurable_data_format:
            config["data_format"] = self.data_format
        return config


class WeightKernelLayer(abc.ABC):
    """Build and export for layers whose weights are one kernel and a bias.

    A base of the Sparse VD and variational layers: ``build`` makes the
    weights (``_build_weights(kernel_shape, bias_shape)``) in the shape the
    geometry mixin gives, and the export form is the geometry's plain layer
    with ``_inference_weights()``.
    """

    def build(self, input_shape):
        kernel_shape, out_dim = self._kernel_shape_from(input_shape)
        self._build_weights(kernel_shape, (out_dim,))

    @abc.abstractmethod
    def _kernel_shape_from(self, input_shape):
        """``(kernel_shape, out_dim)`` for ``input_shape`` (from a geometry mixin)."""

    @abc.abstractmethod
    def _linear(self, inputs, kernel):
        """The deterministic linear map of the layer: its matmul or convolution."""

    @abc.abstractmethod
    def _build_weights(self, kernel_shape, bias_shape):
        """Creates the layer's kernel(s) and bias."""

    @abc.abstractmethod
    def _inference_weights(self):
        """The plain layer's weights: ``[kernel, bias]`` or ``[kernel]``."""

    def inference_layer(self):
        """The export form: the plain Keras layer (Dense / Conv2D) and its weights."""
        return self.plain_layer(), self._inference_weights()
