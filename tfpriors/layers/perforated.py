"""Perforated convolution (Figurnov, Ibraimova, Vetrov & Kohli, PerforatedCNNs, 2016).

The convolution is computed only at a subset of output positions (a
:class:`~tfpriors.perforation.PerforationMask`); every other position takes the
value of its nearest computed neighbour. At perforation rate ``r`` the layer
does ``1 - r`` of the convolution's multiply-adds.
"""

import keras
import tensorflow as tf
from keras import ops

from tfpriors import _validation
from tfpriors import ops as perforation_ops
from tfpriors._inputs import FloatInputs
from tfpriors.ops import autotune
from tfpriors.perforation.masks import MASK_KINDS, PerforationMask, check_rate, make_mask


def _validate_mask(mask):
    if isinstance(mask, PerforationMask):
        return mask
    if isinstance(mask, dict):
        return PerforationMask.from_config(mask)
    if isinstance(mask, str):
        return _validation.one_of(mask, "mask", set(MASK_KINDS))
    raise TypeError(
        f"`mask` must be one of {list(MASK_KINDS)} or a PerforationMask; received {mask!r}."
    )


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
        data_format: ``"channels_last"`` or ``None`` (then
            ``keras.config.image_data_format()`` must be channels last); the
            only layout supported.
        dilation_rate: must be 1 (accepted for ``Conv2D`` compatibility).
        activation: activation function (name or callable); default linear.
        use_bias: whether the layer has a bias.
        kernel_initializer: initializer of the kernel, as in ``Conv2D``.
        bias_initializer: initializer of the bias, as in ``Conv2D``.
        kernel_regularizer: regularizer of the kernel, as in ``Conv2D``.
        bias_regularizer: regularizer of the bias, as in ``Conv2D``.
        activity_regularizer: regularizer of the output, as in ``Conv2D``.
        kernel_constraint: constraint of the kernel, as in ``Conv2D``.
        bias_constraint: constraint of the bias, as in ``Conv2D``.
        rate: (keyword-only) perforation rate in ``[0, 1)``, the fraction of output positions
            not computed. Rate 0 is exactly ``Conv2D``.
        mask: (keyword-only) ``"uniform"``, ``"grid"``, ``"lattice"`` (every other row at
            0.5, every other row and column at 0.75: one strided convolution,
            the fastest), ``"structure"`` (3x3 stride-2 pooling assumed next;
            :func:`tfpriors.perforation.perforate` reads the real one), or a
            :class:`~tfpriors.perforation.PerforationMask` (its rate wins).
            ``"impact"`` needs data: use
            ``tfpriors.perforation.perforate(model, rates, mask="impact", data=(x, y))``.
        seed: (keyword-only) seed of the random masks (uniform, grid, structure ties), a
            non-negative integer or ``None``.
        implementation: (keyword-only) ``"auto"`` (at inference the fastest exact
            implementation for this shape and mask, measured once when the layer
            is built and saved in its config, see :mod:`tfpriors.ops.autotune`;
            in training the one with the fastest gradients: strided for a
            lattice, else the compiled op), or one of them:
            ``"fused"`` (the compiled op, ``make ops``), ``"reference"`` (pure
            TF: gathers and one matmul), ``"strided"`` (lattice masks: one
            strided convolution) or ``"dense"`` (every position computed).
        selected_implementation: (keyword-only) what ``"auto"`` chose for batches of
            ``tfpriors.ops.autotune.SMALL_BATCH_LIMIT`` (8) or more (set by a
            saved config; leave it None).
        small_batch_implementation: (keyword-only) what ``"auto"`` chose for smaller batches
            (likewise).
        built_mask: (keyword-only) the mask built from ``mask`` and ``rate`` (set by a saved
            config so that loading restores the exact positions; leave it None).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``, with height, width and channels
        known when the layer is built (the mask depends on them).

    Output shape:
        ``(batch, new_height, new_width, filters)``, as ``Conv2D``'s.

    Example:
    >>> layer = tfpriors.layers.PerforatedConv2D(64, 3, padding="same", rate=0.5,
    ...                                          mask="grid")
    >>> layer(np.zeros((2, 16, 16, 3), "float32")).shape
    TensorShape([2, 16, 16, 64])
    >>> layer.effective_rate  # the built grid's: 12 x 11 of 16 x 16 positions computed
    0.484375
    >>> layer.flops()  # 132 positions x (3 x 3 x 3) inputs x 64 filters
    228096
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        *,
        rate=0.0,
        mask="uniform",
        seed=None,
        implementation="auto",
        selected_implementation=None,
        small_batch_implementation=None,
        built_mask=None,
        **kwargs,
    ):
        super().__init__(
            activity_regularizer=_validation.regularizer(
                activity_regularizer, "activity_regularizer"
            ),
            **kwargs,
        )
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.int_tuple(kernel_size, "kernel_size", 2)
        self.strides = _validation.int_tuple(strides, "strides", 2)
        self.padding = _validation.one_of(padding, "padding", {"valid", "same"})
        if (data_format or keras.config.image_data_format()) != "channels_last":
            raise ValueError(
                "`data_format` must be 'channels_last' for PerforatedConv2D; "
                f"received {data_format!r}."
            )
        if _validation.int_tuple(dilation_rate, "dilation_rate", 2) != (1, 1):
            raise ValueError(
                f"`dilation_rate` must be 1 for PerforatedConv2D; received {dilation_rate!r}."
            )
        mask = _validate_mask(mask)
        rate = check_rate(rate)
        if isinstance(mask, PerforationMask) and rate != 0.0:
            if abs(rate - mask.rate) > 1.0 / mask.size:
                raise ValueError(
                    f"`rate`={rate} disagrees with the given mask's rate "
                    f"{mask.rate:.4f}; leave `rate` at 0 to use the mask's."
                )
        # What the user asked (saved as given); the mask built from it is `self.mask`.
        self.rate = float(rate)
        self._mask_argument = mask
        if built_mask is not None:  # a saved layer: its exact positions
            built_mask = (
                PerforationMask.from_config(built_mask)
                if isinstance(built_mask, dict)
                else built_mask
            )
            if not isinstance(built_mask, PerforationMask):
                raise TypeError(
                    "`built_mask` must be a PerforationMask or its config (set by a saved "
                    f"layer; leave it None); received {built_mask!r}."
                )
        self.mask = built_mask if built_mask is not None else mask
        self.activation = _validation.activation(activation)
        self.use_bias = _validation.boolean(use_bias, "use_bias")
        self.kernel_initializer = _validation.initializer(kernel_initializer, "kernel_initializer")
        self.bias_initializer = _validation.initializer(bias_initializer, "bias_initializer")
        self.kernel_regularizer = _validation.regularizer(kernel_regularizer, "kernel_regularizer")
        self.bias_regularizer = _validation.regularizer(bias_regularizer, "bias_regularizer")
        self.kernel_constraint = _validation.constraint(kernel_constraint, "kernel_constraint")
        self.bias_constraint = _validation.constraint(bias_constraint, "bias_constraint")
        if seed is not None:
            seed = _validation.real_number(seed, "seed")
            if seed != int(seed) or seed < 0:
                raise ValueError(f"`seed` must be a non-negative integer; received {seed}.")
            seed = int(seed)
        self.seed = _validation.seed(seed)
        self.implementation = _validation.one_of(
            implementation, "implementation", set(perforation_ops.IMPLEMENTATIONS)
        )
        concrete = set(perforation_ops.IMPLEMENTATIONS) - {"auto"}
        if selected_implementation is not None:
            selected_implementation = _validation.one_of(
                selected_implementation, "selected_implementation", concrete
            )
        if small_batch_implementation is not None:
            small_batch_implementation = _validation.one_of(
                small_batch_implementation, "small_batch_implementation", concrete
            )
        self.selected_implementation = selected_implementation
        self.small_batch_implementation = small_batch_implementation

    def _geometry(self, input_shape):
        if len(input_shape) != 4 or any(d is None for d in input_shape[1:]):
            raise ValueError(
                f"`inputs` of PerforatedConv2D '{self.name}' must have shape (batch, height, "
                f"width, channels) with known height, width and channels (the mask depends "
                f"on them); received {tuple(input_shape)}."
            )
        return perforation_ops.conv_geometry(
            (int(input_shape[1]), int(input_shape[2])), self.kernel_size, self.strides, self.padding
        )

    def _make_mask(self, output_shape):
        try:
            return make_mask(self.mask, output_shape, self.rate, seed=self.seed)
        except ValueError as error:
            raise ValueError(f"PerforatedConv2D '{self.name}': {error}") from None

    def _select_implementation(self, input_shape):
        """The implementations that run, as (small batch, large batch).

        They are the user's, the saved choice, or a measured one.
        """
        mask = self.mask
        if len(mask.kept) == mask.size:
            return autotune.Selection("dense", "dense")  # nothing perforated: plain conv
        usable = autotune.candidates(mask.kept, mask.output_shape, self.compute_dtype)
        if self.implementation != "auto":
            if self.implementation == "strided" and "strided" not in usable:
                raise ValueError(
                    f"PerforatedConv2D '{self.name}' has implementation='strided',"
                    " which needs a regular lattice mask (mask='lattice'); its "
                    f"mask is {mask!r}."
                )
            return autotune.Selection(self.implementation, self.implementation)
        saved = (
            self.small_batch_implementation or self.selected_implementation,
            self.selected_implementation,
        )
        if all(name in usable for name in saved):
            return autotune.Selection(*saved)
        if "strided" not in usable and "fused" not in usable:
            perforation_ops.library.warn_fallback()
        return autotune.choose(
            tuple(int(d) for d in input_shape[1:]),
            self.kernel_size,
            self.filters,
            self.strides,
            self._pads,
            mask.output_shape,
            mask.kept,
            mask.fill_index,
            self.compute_dtype,
        )

    def build(self, input_shape):
        out_h, out_w, pad_top, pad_left = self._geometry(input_shape)
        self.mask = self._make_mask((out_h, out_w))
        self._pads = (pad_top, pad_left)
        self._selection = self._select_implementation(input_shape)
        self.small_batch_implementation, self.selected_implementation = self._selection
        # Training runs the implementation with the fastest gradients: strided for a
        # lattice, else the compiled op (its own backprop kernels), else pure TF.
        self._training_implementation = self.selected_implementation
        if self.implementation == "auto" and self.selected_implementation != "dense":
            self._training_implementation = autotune.rule(
                self.mask.kept, self.mask.output_shape, self.compute_dtype
            )
        in_channels = int(input_shape[-1])
        self.kernel = self.add_weight(
            name="kernel",
            shape=self.kernel_size + (in_channels, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.input_spec = keras.InputSpec(
            ndim=4, axes={1: int(input_shape[1]), 2: int(input_shape[2]), -1: in_channels}
        )

    def call(self, inputs, training=None):
        kernel = ops.cast(self.kernel, self.compute_dtype)
        bias = None if self.bias is None else ops.cast(self.bias, self.compute_dtype)
        if len(self.mask.kept) == self.mask.size:
            # Nothing perforated: the plain convolution, bit for bit Conv2D's.
            outputs = ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)
            if bias is not None:
                outputs = outputs + bias
            return outputs if self.activation is None else self.activation(outputs)

        def run(implementation):
            # Bias and activation go on the computed rows, before the fill copies them.
            return perforation_ops.perforated_conv2d(
                inputs,
                kernel,
                self.mask.kept,
                self.mask.fill_index,
                self.mask.output_shape,
                self.strides,
                self._pads,
                implementation=implementation,
                bias=bias,
                activation=self.activation,
            )

        if training:
            return run(self._training_implementation)
        small, large = self._selection
        batch = inputs.shape[0]
        if small == large or batch is not None:
            return run(self._selection.for_batch(batch) if batch is not None else large)
        return tf.cond(
            tf.shape(inputs)[0] < autotune.SMALL_BATCH_LIMIT, lambda: run(small), lambda: run(large)
        )

    def compute_output_shape(self, input_shape):
        out_h, out_w, _, _ = self._geometry(input_shape)
        return (input_shape[0], out_h, out_w, self.filters)

    def inference_layer(self):
        """The export form: the same layer, running the implementation chosen for it.

        In a TFLite export (``tfpriors.export.to_tflite``) every mask becomes a
        PAD-free im2col by GATHER, one FULLY_CONNECTED and the filling GATHER:
        builtin ops only, and the fastest form on LiteRT (see
        :func:`tfpriors.ops.builtin_ops_only`).
        """
        config = self.get_config()
        config["implementation"] = self.selected_implementation
        config["selected_implementation"] = config["small_batch_implementation"] = None
        layer = PerforatedConv2D.from_config(config)
        return layer, [ops.convert_to_numpy(w) for w in self.weights]

    @property
    def effective_rate(self):
        """The rate of the mask in use (given, or built from ``mask`` and ``rate``).

        A grid or lattice has rows x cols points, so it can differ from the
        ``rate`` asked for.
        """
        if not isinstance(self.mask, PerforationMask):
            raise ValueError(f"PerforatedConv2D '{self.name}' is not built yet: no mask.")
        return self.mask.rate

    def flops(self):
        """Multiply-adds of one example's forward pass (kept positions only)."""
        kh, kw = self.kernel_size
        return len(self.mask.kept) * kh * kw * int(self.kernel.shape[2]) * self.filters

    def get_config(self):
        config = super().get_config()
        argument = self._mask_argument
        mask = argument.get_config() if isinstance(argument, PerforationMask) else argument
        built = self.mask.get_config() if isinstance(self.mask, PerforationMask) else None
        config.update(
            {
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
                "selected_implementation": self.selected_implementation,
                "small_batch_implementation": self.small_batch_implementation,
                "built_mask": built,
            }
        )
        return config
