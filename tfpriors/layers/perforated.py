"""Perforated convolution (Figurnov, Ibraimova, Vetrov & Kohli, PerforatedCNNs, 2016).

The convolution is computed only at a subset of output positions (a
:class:`~tfpriors.perforation.PerforationMask`); every other position takes the
value of its nearest computed neighbour. At perforation rate ``r`` the layer
does ``1 - r`` of the convolution's multiply-adds.
"""

import keras
from keras import ops

from tfpriors import _validation
from tfpriors import ops as perforation_ops
from tfpriors.layers.geometry import FloatInputs
from tfpriors.perforation.masks import (MASK_KINDS, PerforationMask, grid_mask, structure_mask,
                                        uniform_mask)


def _validate_mask(mask):
    if isinstance(mask, PerforationMask):
        return mask
    if isinstance(mask, dict):
        return PerforationMask.from_config(mask)
    if isinstance(mask, str):
        return _validation.one_of(mask, "mask", set(MASK_KINDS))
    raise TypeError(f"`mask` must be one of {list(MASK_KINDS)} or a PerforationMask; "
                    f"received {mask!r}.")


@keras.saving.register_keras_serializable(package="tfpriors")
class PerforatedConv2D(FloatInputs, keras.layers.Layer):
    """2D convolution computed at a subset of output positions, the rest filled.

    A drop-in replacement for ``keras.layers.Conv2D`` (channels last, no
    dilation, no groups): ``kernel`` ``(kh, kw, in_channels, filters)`` and
    ``bias`` ``(filters,)`` have the same shapes and meaning, so perforating a
    trained model copies them. Outputs at kept positions equal Conv2D's; every
    other position equals its nearest kept position (before bias and
    activation, which are applied everywhere). The mask is not a weight: it is
    built from the input shape in ``build`` and saved in the layer's config, so
    a ``.keras`` round trip restores it exactly.

    Args:
        filters: positive integer, the number of output channels.
        kernel_size: int or tuple of 2 ints.
        strides: int or tuple of 2 ints, default 1.
        padding: ``"valid"`` or ``"same"``.
        rate: perforation rate in ``[0, 1)``, the fraction of output positions
            not computed. Rate 0 is exactly ``Conv2D``.
        mask: ``"uniform"``, ``"grid"``, ``"structure"`` (3x3 stride-2 pooling
            assumed next; :func:`tfpriors.perforation.perforate` reads the real
            one), or a :class:`~tfpriors.perforation.PerforationMask` (its rate
            wins). ``"impact"`` needs data: use
            ``tfpriors.perforation.perforate(model, rates, mask="impact", data=(x, y))``.
        activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: as in ``Conv2D``.
        seed: seed of the random masks (uniform, grid, structure ties).
        implementation: ``"auto"`` (fused op when built, else pure TF),
            ``"fused"`` or ``"reference"`` (pure TF: gathers and one matmul,
            the TFLite export form).

    Example:

    >>> layer = tfpriors.layers.PerforatedConv2D(64, 3, padding="same", rate=0.5,
    ...                                          mask="grid")
    >>> layer(np.zeros((2, 16, 16, 3), "float32")).shape
    TensorShape([2, 16, 16, 64])
    >>> layer.rate  # the built grid's rate: 12 x 11 of 16 x 16 positions computed
    0.484375
    """

    def __init__(self, filters, kernel_size, strides=1, padding="valid", rate=0.0,
                 mask="uniform", activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, seed=None,
                 implementation="auto", data_format=None, dilation_rate=1, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.int_tuple(kernel_size, "kernel_size", 2)
        self.strides = _validation.int_tuple(strides, "strides", 2)
        self.padding = _validation.one_of(padding, "padding", {"valid", "same"})
        if (data_format or keras.config.image_data_format()) != "channels_last":
            raise ValueError("`data_format` must be 'channels_last' for PerforatedConv2D; "
                             f"received {data_format!r}.")
        if _validation.int_tuple(dilation_rate, "dilation_rate", 2) != (1, 1):
            raise ValueError("`dilation_rate` must be 1 for PerforatedConv2D; received "
                             f"{dilation_rate!r}.")
        mask = _validate_mask(mask)
        if isinstance(mask, PerforationMask):
            rate = _validation.real_number(rate, "rate", 0.0, 1.0)
            if rate != 0.0 and abs(rate - mask.rate) > 1.0 / mask.size:
                raise ValueError(f"`rate`={rate} disagrees with the given mask's rate "
                                 f"{mask.rate:.4f}; leave `rate` at 0 to use the mask's.")
            rate = mask.rate
        else:
            rate = _validation.real_number(rate, "rate", 0.0, 1.0)
            if rate >= 1.0:
                raise ValueError(f"`rate` must be in [0, 1); received {rate}.")
        self.rate = float(rate)
        self.mask = mask
        self.activation = keras.activations.get(activation)
        self.use_bias = _validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = _validation.initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        if seed is not None:
            seed = _validation.real_number(seed, "seed")
            if seed != int(seed) or seed < 0:
                raise ValueError(f"`seed` must be a non-negative integer; received {seed}.")
            seed = int(seed)
        self.seed = _validation.seed(seed)
        self.implementation = _validation.one_of(implementation, "implementation",
                                                 set(perforation_ops.IMPLEMENTATIONS))

    def _geometry(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                f"`inputs` of PerforatedConv2D '{self.name}' must have shape (batch, height, "
                f"width, channels) with known height, width and channels (the mask depends "
                f"on them); received {tuple(input_shape)}.")
        return perforation_ops.conv_geometry((int(input_shape[1]), int(input_shape[2])),
                                             self.kernel_size, self.strides, self.padding)

    def _make_mask(self, output_shape):
        if isinstance(self.mask, PerforationMask):
            if self.mask.output_shape != output_shape:
                raise ValueError(
                    f"The mask of PerforatedConv2D '{self.name}' is for outputs of shape "
                    f"{self.mask.output_shape}, but the input gives {output_shape}.")
            return self.mask
        if self.mask == "uniform":
            return uniform_mask(output_shape, self.rate, seed=self.seed)
        if self.mask == "grid":
            return grid_mask(output_shape, self.rate, seed=self.seed)
        if self.mask == "structure":
            return structure_mask(output_shape, self.rate, seed=self.seed)
        raise ValueError(
            f"PerforatedConv2D '{self.name}' has mask='impact', which needs data to "
            "measure each position's impact on the loss: use tfpriors.perforation."
            "perforate(model, rates, mask='impact', data=(x, y)), or pass a "
            "PerforationMask built with tfpriors.perforation.mask_from_scores("
            "tfpriors.perforation.impact_scores(model, layer, (x, y)), rate).")

    def build(self, input_shape):
        out_h, out_w, pad_top, pad_left = self._geometry(input_shape)
        self.mask = self._make_mask((out_h, out_w))
        # A grid has rows x cols points: the true rate can differ from the one asked.
        self.rate = self.mask.rate
        self._pads = (pad_top, pad_left)
        in_channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel", shape=self.kernel_size + (in_channels, self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        self.input_spec = keras.InputSpec(ndim=4, axes={1: int(input_shape[1]),
                                                        2: int(input_shape[2]),
                                                        -1: in_channels})

    def call(self, inputs):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        if len(self.mask.kept) == self.mask.size:
            # Nothing perforated: the plain convolution, bit for bit Conv2D's.
            outputs = ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)
        else:
            outputs = perforation_ops.perforated_conv2d(
                inputs, kernel, self.mask.kept, self.mask.fill_index,
                self.mask.output_shape, self.strides, self._pads,
                implementation=self.implementation)
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, self.compute_dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        out_h, out_w, _, _ = self._geometry(input_shape)
        return (input_shape[0], out_h, out_w, self.filters)

    def inference_layer(self):
        """The export form: the same layer on the pure-TF path (TFLite builtin ops only).

        Its graph is PAD-free im2col by GATHER, one FULLY_CONNECTED and a
        GATHER filling the perforated positions.
        """
        config = self.get_config()
        config["implementation"] = "reference"
        layer = PerforatedConv2D.from_config(config)
        return layer, [ops.convert_to_numpy(w) for w in self.weights]

    def flops(self):
        """Multiply-adds of one example's forward pass (kept positions only)."""
        kh, kw = self.kernel_size
        return len(self.mask.kept) * kh * kw * int(self.kernel.shape[2]) * self.filters

    def get_config(self):
        config = super().get_config()
        mask = self.mask.get_config() if isinstance(self.mask, PerforationMask) else self.mask
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "rate": self.rate,
            "mask": mask,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "activity_regularizer": keras.regularizers.serialize(self.activity_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "seed": self.seed,
            "implementation": self.implementation,
        })
        return config
