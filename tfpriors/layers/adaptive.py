"""Adaptive computation time for residual networks (Graves 2016; Figurnov et al. 2017).

A block holds ``num_units`` residual units. After each unit a halting head
says how much of the remaining probability mass stops there; a halted
example (ACT) or spatial position (SACT, probabilistic ACT) is no longer
updated by the following units, and at inference it is not computed either.

Units. ``unit_factory`` is a callable returning one *full* residual unit: a
Keras layer mapping ``(N, H, W, C) -> (N, H, W, C)`` that already contains
its skip connection (``ResidualUnit`` below is one). The block calls the
factory once, stores ``keras.saving.serialize_keras_object`` of that
prototype in its config and rebuilds every unit from it with
``keras.saving.deserialize_keras_object``: any registered serializable layer
class round-trips through ``.keras`` files, and a saved block's config can be
passed back as ``unit_factory`` (a dict) too. A unit with a
``sparse_call(x, active)`` method (``ResidualUnit`` has one) is evaluated at
active positions only at inference; other units are evaluated densely and
masked (same result, no spatial saving).

Facts from the papers: halting logits start at bias -3, ``eps = 0.01``, the
last unit always halts, ``R`` is the remainder, the ponder cost is
``N + R`` (``N`` is a count, so only ``R`` carries gradient) times ``tau``,
added with ``add_loss``. The probabilistic blocks replace the halting
weights by latent Bernoulli halting variables whose first success is the
number of iterations; its prior is a truncated geometric distribution, whose
log-probability is linear in the number of iterations, so the objective is
the expected log-likelihood minus ``ponder_cost`` times the expected number
of iterations.
"""

import copy
import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfpriors import _validation, distributed
from tfpriors import ops as conv_ops
from tfpriors._inputs import FloatInputs
from tfpriors.graph import walk
from tfpriors.layers.seed_state import SeedStateMixin
from tfpriors.ops import conv

HALTING_BIAS_INIT = -3.0
HALTING_EPS = 0.01
MODES = ("relaxed", "discrete", "threshold")
RELAXED_LOGIT_LIMIT = 20.0
# Below this fraction of active positions a unit runs on gathered positions;
# above it, a dense pass with a mask costs less than the gathers.
SPARSE_FRACTION = 0.6
# Batch-norm statistics settle within the few hundred steps of small data sets.
BN_MOMENTUM = 0.9
# Moving-average rate of the REINFORCE baseline.
BASELINE_DECAY = 0.9


def _unit_config(unit_factory):
    if isinstance(unit_factory, dict):
        config = unit_factory
    elif isinstance(unit_factory, keras.layers.Layer):
        config = keras.saving.serialize_keras_object(unit_factory)
    elif callable(unit_factory):
        unit = unit_factory()
        if not isinstance(unit, keras.layers.Layer):
            raise TypeError(
                "`unit_factory` must return a Keras layer (one residual unit); "
                f"it returned {type(unit).__name__}."
            )
        config = keras.saving.serialize_keras_object(unit)
    else:
        raise TypeError(
            "`unit_factory` must be a callable returning a Keras layer, a Keras "
            f"layer, or a serialized layer config; received {unit_factory!r}."
        )
    try:
        keras.saving.deserialize_keras_object(copy.deepcopy(config))
    except Exception as error:  # Keras raises TypeError, ValueError and others here
        raise ValueError(
            "`unit_factory` must build a serializable Keras layer (register its "
            "class with keras.saving.register_keras_serializable); rebuilding it "
            f"from its config failed: {error}"
        ) from error
    return config


def _ponder_cost(value):
    return _validation.real_number(value, "ponder_cost", minimum=0.0)


# -- units --------------------------------------------------------------------------------


def _folded_conv(conv, bn, dtype):
    """A convolution followed by inference batch normalization as one kernel and bias."""
    scale = bn.gamma / tf.sqrt(bn.moving_variance + bn.epsilon)
    kernel = tf.cast(conv.kernel * scale, dtype)
    return kernel, tf.cast(bn.beta - bn.moving_mean * scale, dtype)


@keras.saving.register_keras_serializable(package="tfpriors")
class ResidualUnit(FloatInputs, keras.layers.Layer):
    """A CIFAR-style residual unit: ``relu(x + BN(conv(relu(BN(conv(x))))))``.

    With ``strides > 1`` or a change of channels the shortcut is a strided
    1x1 convolution with batch normalization (such units change the shape
    and are used between adaptive blocks, never inside one).

    At inference :meth:`sparse_call` computes the unit at chosen positions
    only: the first convolution runs at the active positions dilated by its
    kernel, the second at the active positions, with batch normalization
    folded into them. Both go through :func:`tfpriors.ops.conv_at_positions`,
    the im2col + GEMM engine of the perforated convolution.

    Args:
        filters: number of output channels.
        kernel_size: odd size of both convolutions, default 3.
        strides: stride of the first convolution and the shortcut.
        synchronized_batch_norm: under a ``tf.distribute`` strategy, normalize
            with the statistics of the global batch (one all-reduce per batch
            normalization) rather than of each replica's slice, so that
            training does not depend on the number of replicas.
        implementation: of the sparse convolutions: ``"auto"`` (the compiled
            op when loaded, else pure TF), ``"fused"`` or ``"reference"`` (pure
            TF: GATHER + FULLY_CONNECTED; TFLite exports always use it).
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``.

    Output shape:
        ``(batch, new_height, new_width, filters)``: the input's shape when
        ``strides == 1`` and ``filters == channels`` (the units of an adaptive block).

    Example:
    >>> unit = tfpriors.layers.ResidualUnit(16)
    >>> x = np.random.rand(2, 8, 8, 16).astype("float32")
    >>> unit(x).shape
    TensorShape([2, 8, 8, 16])
    >>> active = np.zeros((2, 8, 8), bool)
    >>> active[:, :4] = True  # compute the top half only
    >>> sparse = unit.sparse_call(x, active)
    >>> bool(np.allclose(sparse[:, :4], unit(x)[:, :4], atol=1e-5))
    True
    >>> bool(np.array_equal(sparse[:, 4:], x[:, 4:]))  # elsewhere the input passes through
    True
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        synchronized_batch_norm=False,
        implementation="auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.implementation = _validation.one_of(
            implementation, "implementation", {"auto", "fused", "reference"}
        )
        self.filters = _validation.positive_int(filters, "filters")
        self.kernel_size = _validation.positive_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd; received {kernel_size}.")
        # A TensorFlow int32 attribute: larger strides abort the process.
        self.strides = _validation.positive_int(strides, "strides", maximum=_validation.INT32_MAX)
        self.synchronized_batch_norm = _validation.boolean(
            synchronized_batch_norm, "synchronized_batch_norm"
        )
        conv = dict(padding="same", use_bias=False, kernel_initializer="he_normal")
        self.conv1 = keras.layers.Conv2D(
            filters, self.kernel_size, strides=self.strides, name="conv1", **conv
        )
        self.bn1 = self._batch_norm("bn1")
        self.conv2 = keras.layers.Conv2D(filters, self.kernel_size, name="conv2", **conv)
        self.bn2 = self._batch_norm("bn2")
        self.shortcut = None

    def _batch_norm(self, name):
        return keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, synchronized=self.synchronized_batch_norm, name=name
        )

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if self.strides > 1 or input_shape[-1] != self.filters:
            self.shortcut = keras.layers.Conv2D(
                self.filters, 1, strides=self.strides, use_bias=False, name="shortcut"
            )
            self.shortcut_bn = self._batch_norm("shortcut_bn")
            self.shortcut.build(input_shape)
            self.shortcut_bn.build(self.shortcut.compute_output_shape(input_shape))
        self.conv1.build(input_shape)
        hidden = self.conv1.compute_output_shape(input_shape)
        self.bn1.build(hidden)
        self.conv2.build(hidden)
        self.bn2.build(hidden)

    def call(self, inputs, training=False):
        hidden = ops.relu(self.bn1(self.conv1(inputs), training=training))
        residual = self.bn2(self.conv2(hidden), training=training)
        shortcut = inputs
        if self.shortcut is not None:
            shortcut = self.shortcut_bn(self.shortcut(inputs), training=training)
        return ops.relu(shortcut + residual)

    def macs_per_position(self, input_shape):
        """Multiply-adds per output position (both convolutions and the shortcut)."""
        channels = int(input_shape[-1])
        k2 = self.kernel_size**2
        macs = k2 * channels * self.filters + k2 * self.filters * self.filters
        if self.strides > 1 or channels != self.filters:
            macs += channels * self.filters
        return macs

    def sparse_call(self, inputs, active):
        """Inference output with the unit computed only where ``active`` (N, H, W) is true.

        Elsewhere the output equals the input. Needs static height, width and
        channels and a shape-preserving unit. With the compiled ops (float32)
        the whole unit is one ``SparseResidualUnit`` op on the ConvAtPositions
        engine; otherwise :func:`tfpriors.ops.conv_at_positions` and
        scatters in TensorFlow.

        Args:
            inputs: a batch ``(N, H, W, C)`` with ``C == filters``.
            active: a boolean ``(N, H, W)`` mask of the positions to compute.

        Returns:
            The outputs, the shape of ``inputs``.
        """
        if self.strides != 1 or inputs.shape[-1] != self.filters:
            raise ValueError(
                "sparse_call needs a shape-preserving unit (strides 1, "
                "as many filters as input channels)."
            )
        dtype = inputs.dtype
        (kernel1, bias1), (kernel2, bias2) = (
            _folded_conv(conv, bn, dtype)
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2))
        )
        module = conv.fused_module_for(self.implementation, dtype)
        if module is not None:
            return module.sparse_residual_unit(
                inputs, tf.cast(active, tf.bool), kernel1, bias1, kernel2, bias2
            )
        height, width, channels = inputs.shape[1:]
        k, pad = self.kernel_size, self.kernel_size // 2
        size = (height, width)

        def conv_at(x, kernel, positions):
            return conv_ops.conv_at_positions(
                x, kernel, positions, size, (1, 1), (pad, pad), implementation="reference"
            )

        def flat_positions(mask):  # n * H * W + p of every true entry, in order
            return tf.cast(tf.where(tf.reshape(mask, (-1,)))[:, 0], tf.int32)

        # The first convolution is needed wherever the second one reads.
        dilated = tf.nn.max_pool2d(tf.cast(active, dtype)[..., None], k, 1, "SAME")[..., 0] > 0
        dilated_positions = flat_positions(dilated)
        active_positions = flat_positions(active)
        hidden = tf.nn.relu(conv_at(inputs, kernel1, dilated_positions) + bias1)
        flat_shape = tf.stack([tf.shape(inputs)[0] * height * width, self.filters])
        hidden_map = tf.reshape(
            tf.scatter_nd(dilated_positions[:, None], hidden, flat_shape), tf.shape(inputs)
        )
        residual = conv_at(hidden_map, kernel2, active_positions) + bias2
        flat_inputs = tf.reshape(inputs, (-1, channels))
        updated = tf.nn.relu(tf.gather(flat_inputs, active_positions) + residual)
        updated_map = tf.reshape(
            tf.scatter_nd(active_positions[:, None], updated, flat_shape), tf.shape(inputs)
        )
        return tf.where(active[..., None], updated_map, inputs)

    def inference_layer(self):
        """The export form: a copy (deterministic, TFLite builtin ops only) and its weights."""
        return type(self).from_config(self.get_config()), self.get_weights()

    def compute_output_shape(self, input_shape):
        shape = self.conv1.compute_output_shape(tuple(input_shape))
        return tuple(shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "synchronized_batch_norm": self.synchronized_batch_norm,
                "implementation": self.implementation,
            }
        )
        return config


def unit_macs_per_position(unit, input_shape):
    """Multiply-adds of one unit per position: its own count, else its Conv2D/Dense layers.

    Args:
        unit: a unit of an adaptive block (built, for the Conv2D/Dense count).
        input_shape: the unit's input shape ``(batch, height, width, channels)``.

    Returns:
        An integer: ``unit.macs_per_position(input_shape)`` when the unit has
        that method, else the sizes of its Conv2D and Dense kernels summed.
    """
    if hasattr(unit, "macs_per_position"):
        return unit.macs_per_position(input_shape)
    macs = 0
    for layer in walk(unit, include_self=True):
        kernel = getattr(layer, "kernel", None)
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and kernel is not None:
            macs += int(np.prod(kernel.shape))
    return macs


# -- blocks -------------------------------------------------------------------------------


class AdaptiveBlock(FloatInputs, keras.layers.Layer):
    """Shared machinery of the adaptive blocks: units, halting heads, ponder metric.

    Subclasses define the halting granularity (``_spatial``) and
    ``_forward(x, training, fast)`` returning ``(outputs, units evaluated per
    position (N, H, W), ponder cost per example)``. Use the concrete
    :class:`ACTBlock`, :class:`SACTBlock` and :class:`ProbabilisticACTBlock`;
    the tools of :mod:`tfpriors.adaptive` accept any of them.

    Args:
        unit_factory: callable returning one full residual unit (a Keras layer
            mapping (N, H, W, C) to the same shape, skip connection included),
            a layer to copy, or a serialized layer config.
        num_units: (keyword-only) number of units, >= 1.
        ponder_cost: (keyword-only) ``tau`` >= 0; change it during training
            with ``set_ponder_cost`` or ``tfpriors.callbacks.PonderCostSchedule``.
        sparse_inference: (keyword-only) evaluate units only where needed at
            inference.
        track_metrics: (keyword-only) update the ponder metric in ``call``.
        _spatial: (keyword-only) internal: halt per position (``True``) or per
            example (``False``); ``None`` keeps the class's choice. Leave it None.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``, with height, width and channels known.

    Output shape:
        ``(batch, height, width, channels)``, the input's.

    Example:
    >>> block = tfpriors.layers.SACTBlock(lambda: tfpriors.layers.ResidualUnit(8), num_units=3)
    >>> isinstance(block, tfpriors.layers.AdaptiveBlock)
    True
    >>> len(block.units), block.units[0].name
    (3, 'unit0')
    >>> block.set_ponder_cost(0.05)
    >>> block.ponder_cost
    0.05
    """

    _spatial = True

    def __init__(
        self,
        unit_factory,
        *,
        num_units=5,
        ponder_cost=0.01,
        sparse_inference=True,
        track_metrics=True,
        _spatial=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # Feature maps only: a wrong rank is refused by Keras with a message
        # naming the input, before the halting loop sees it.
        self.input_spec = keras.layers.InputSpec(ndim=4)
        if _spatial is not None:
            self._spatial = _spatial
        self.num_units = _validation.positive_int(num_units, "num_units")
        self._ponder_cost = _ponder_cost(ponder_cost)
        # Kept as JSON text: TensorFlow's attribute tracking would wrap a dict.
        self._unit_json = json.dumps(_unit_config(unit_factory))
        sparse_inference = _validation.boolean(sparse_inference, "sparse_inference")
        track_metrics = _validation.boolean(track_metrics, "track_metrics")
        self.sparse_inference = sparse_inference
        self.track_metrics = track_metrics
        self.units = []
        for i in range(self.num_units):
            config = self.unit_config
            config.setdefault("config", {})["name"] = f"unit{i}"
            self.units.append(keras.saving.deserialize_keras_object(config))
        halting_bias = keras.initializers.Constant(HALTING_BIAS_INIT)
        self.halting_dense = [
            keras.layers.Dense(
                1,
                bias_initializer=halting_bias,
                use_bias=not self._spatial,
                name=f"halting_dense{i}",
            )
            for i in range(self.num_units - 1)
        ]
        self.halting_conv = []
        if self._spatial:
            self.halting_conv = [
                keras.layers.Conv2D(
                    1, 3, padding="same", bias_initializer=halting_bias, name=f"halting_conv{i}"
                )
                for i in range(self.num_units - 1)
            ]
        self.ponder_tracker = keras.metrics.Mean(name=f"{self.name}/ponder")

    @property
    def unit_config(self):
        """The serialized prototype unit (a fresh dict); a valid ``unit_factory``."""
        return json.loads(self._unit_json)

    @property
    def ponder_cost(self):
        return self._ponder_cost

    def set_ponder_cost(self, value):
        """Sets ``tau`` without retracing (it is a non-trainable variable).

        Args:
            value: the new ponder cost, a number >= 0.
        """
        self._ponder_cost = _ponder_cost(value)
        if self.built:
            self.tau.assign(self._ponder_cost)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 4 or None in input_shape[1:] or 0 in input_shape[1:]:
            raise ValueError(
                f"`inputs` of {type(self).__name__} '{self.name}' must have shape "
                "(batch, height, width, channels) with known, non-zero height, "
                f"width and channels; received {input_shape}."
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})
        for unit in self.units:
            if not unit.built:
                unit.build(input_shape)
            output_shape = tuple(
                unit.compute_output_spec(
                    keras.KerasTensor(input_shape, dtype=self.compute_dtype)
                ).shape
            )
            if output_shape[1:] != input_shape[1:]:
                raise ValueError(
                    f"`unit_factory` must return shape-preserving units; unit "
                    f"'{unit.name}' maps {input_shape} to {output_shape}."
                )
        for layer in self.halting_conv:
            layer.build(input_shape)
        for layer in self.halting_dense:
            layer.build((input_shape[0], input_shape[-1]))
        # float32 under mixed precision too: the ponder cost joins the float32 loss.
        self.tau = self.add_weight(
            name="ponder_cost",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(self._ponder_cost),
            autocast=False,
        )

    # -- halting ------------------------------------------------------------------------

    def _halting_shape(self, x):
        """Shape of the halting variables: (N, 1, 1) per example, (N, H, W) per position."""
        if not self._spatial:
            return tf.stack([tf.shape(x)[0], 1, 1])
        return tf.shape(x)[:3]

    def _halting_logits(self, index, x):
        """Logits of unit ``index`` halting, (N, 1, 1) per example or (N, H, W) per position."""
        pooled = ops.cast(self.halting_dense[index](ops.mean(x, axis=(1, 2)))[:, :, None], x.dtype)
        if not self._spatial:
            return pooled
        return ops.cast(self.halting_conv[index](x)[..., 0], x.dtype) + pooled

    def _unit(self, index, x, active, training):
        """Unit ``index`` applied where ``active``; the input is kept elsewhere."""
        return tf.where(
            active[..., None], ops.cast(self.units[index](x, training=training), x.dtype), x
        )

    def _fast_unit(self, index, x, active, any_active):
        """Inference form of :meth:`_unit`: no work for halted examples or positions.

        The choices are sequential, never nested, ``tf.cond`` s: the TFLite
        converter cannot functionalize nested conditionals of a frozen graph.
        """
        unit = self.units[index]
        if not self._spatial:
            return tf.cond(any_active, lambda: self._unit_on_examples(unit, x, active), lambda: x)
        if not self.sparse_inference or not hasattr(unit, "sparse_call"):
            return tf.cond(any_active, lambda: self._unit(index, x, active, False), lambda: x)
        use_sparse = any_active & (tf.reduce_mean(tf.cast(active, tf.float32)) < SPARSE_FRACTION)
        sparse = tf.cond(use_sparse, lambda: unit.sparse_call(x, active), lambda: x)
        return tf.cond(
            any_active & ~use_sparse, lambda: self._unit(index, x, active, False), lambda: sparse
        )

    @staticmethod
    def _unit_on_examples(unit, x, active):
        # Only the examples still running go through the unit.
        running = tf.reshape(active[:, :1, :1], (-1,))
        index = tf.cast(tf.where(running), tf.int32)
        updated = ops.cast(unit(tf.gather_nd(x, index), training=False), x.dtype)
        updated_map = tf.scatter_nd(index, updated, tf.shape(x))
        return tf.where(running[:, None, None, None], updated_map, x)

    def _unit_and_halting(self, index, state, running, x, training, fast, halting_fn, skipped):
        """Runs unit ``index`` where ``running``, then its halting head.

        At inference both are skipped once nothing runs. Returns the new state
        and ``halting_fn(logits)``.
        """
        active = self._broadcast(running, x)
        last = index == self.num_units - 1
        if not fast:
            state = self._unit(index, state, active, training)
            return state, skipped() if last else halting_fn(self._halting_logits(index, state))
        any_active = tf.reduce_any(running)
        state = self._fast_unit(index, state, active, any_active)
        if last:
            return state, skipped()
        return state, tf.cond(
            any_active, lambda: halting_fn(self._halting_logits(index, state)), skipped
        )

    # -- forward ------------------------------------------------------------------------

    def _broadcast(self, halting, x):
        """Halting values (N, h, w) broadcast to the spatial shape of ``x``."""
        return tf.broadcast_to(halting, tf.shape(x)[:3])

    def call(self, inputs, training=False):
        if 0 in tuple(inputs.shape)[1:3]:
            raise ValueError(
                f"`inputs` of {type(self).__name__} '{self.name}' must have a "
                f"non-zero height and width; received {tuple(inputs.shape)}."
            )
        outputs, counts, ponder = self._forward(inputs, bool(training), fast=not training)
        self.add_loss(self.tau * ops.cast(ops.mean(ponder), "float32"))
        if self.track_metrics:
            self.ponder_tracker.update_state(ops.mean(counts))
        return outputs

    def evaluated_units(self, inputs):
        """Units evaluated per position at inference, float (N, H, W)."""
        return self._forward(tf.convert_to_tensor(inputs), False, fast=False)[1]

    def macs_per_position(self, input_shape):
        """Multiply-adds of one unit and of one halting head.

        Returns a tuple: the unit's per position, the halting head's per
        position (its 3x3 convolution; 0 when halting per example) and its
        per example (its Dense).
        """
        channels = int(input_shape[-1])
        head = 9 * channels if self._spatial else 0
        return unit_macs_per_position(self.units[0], input_shape), head, channels

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def inference_layer(self):
        """The export form: the same block without metric updates (deterministic)."""
        config = self.get_config()
        config["track_metrics"] = False
        layer = type(self).from_config(config)
        return layer, self.get_weights()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "unit_factory": self.unit_config,
                "num_units": self.num_units,
                "ponder_cost": self._ponder_cost,
                "sparse_inference": self.sparse_inference,
                "track_metrics": self.track_metrics,
            }
        )
        return config


class _ACTForward(AdaptiveBlock):
    """Graves' halting: weights h_1, ..., h_{N-1}, R summing to one."""

    def _forward(self, x, training, fast):
        dtype = x.dtype
        halting_shape = self._halting_shape(x)
        cumulative = tf.zeros(halting_shape, dtype)
        running = tf.ones(halting_shape, tf.bool)
        counts = tf.zeros(halting_shape, dtype)
        remainder = tf.zeros(halting_shape, dtype)
        outputs = tf.zeros_like(x)
        state = x
        for index in range(self.num_units):
            last = index == self.num_units - 1
            state, halting = self._unit_and_halting(
                index,
                state,
                running,
                x,
                training,
                fast,
                ops.sigmoid,
                lambda: tf.ones(halting_shape, dtype),
            )
            new_cumulative = cumulative + halting
            halts = running & ((new_cumulative >= 1.0 - HALTING_EPS) | last)
            weight = tf.where(
                halts, 1.0 - cumulative, tf.where(running, halting, tf.zeros_like(halting))
            )
            remainder = tf.where(halts, 1.0 - cumulative, remainder)
            counts += tf.cast(running, dtype)
            outputs += self._broadcast(weight, x)[..., None] * state
            cumulative = new_cumulative
            running = running & ~halts
        # N is a count: it carries no gradient; R does.
        ponder = tf.stop_gradient(counts) + remainder
        ponder = tf.reduce_mean(tf.reshape(ponder, (tf.shape(x)[0], -1)), axis=1)
        return outputs, self._broadcast(counts, x), ponder


@keras.saving.register_keras_serializable(package="tfpriors")
class ACTBlock(_ACTForward):
    """Adaptive computation time over residual units, halting per example (Graves 2016).

    After unit ``l`` a halting probability ``h_l = sigmoid(w . mean_pool(x_l) + b)``
    (``b`` starts at -3) is accumulated; an example halts at the first ``N``
    with ``h_1 + ... + h_N >= 1 - 0.01`` (the last unit always halts). The
    output is ``sum_{l<N} h_l x_l + R x_N`` with remainder
    ``R = 1 - sum_{l<N} h_l``, and ``ponder_cost * mean(N + R)`` joins the loss
    (``N`` carries no gradient). At inference the units skip halted examples
    (only running examples are gathered through a unit) and a unit is not run
    at all once every example halted (``tf.cond``, a TFLite IF).

    The mean number of evaluated units is the metric ``<block name>/ponder``
    in ``fit`` / ``evaluate`` logs.

    Args:
        unit_factory: callable returning one full residual unit (a Keras layer
            mapping (N, H, W, C) to the same shape, skip connection included),
            a layer to copy, or a serialized layer config.
        num_units: (keyword-only) number of units, >= 1.
        ponder_cost: (keyword-only) ``tau`` >= 0; change it during training
            with ``set_ponder_cost`` or ``tfpriors.callbacks.PonderCostSchedule``.
        sparse_inference: (keyword-only) evaluate units only where needed at
            inference.
        track_metrics: (keyword-only) update the ponder metric in ``call``.
        _spatial: (keyword-only) internal (see :class:`AdaptiveBlock`); leave it None.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``, with height, width and channels known.

    Output shape:
        ``(batch, height, width, channels)``, the input's.

    Example:
    >>> block = tfpriors.layers.ACTBlock(lambda: tfpriors.layers.ResidualUnit(16),
    ...                                  num_units=5, ponder_cost=0.01)
    >>> x = np.random.rand(2, 8, 8, 16).astype("float32")
    >>> block(x).shape
    TensorShape([2, 8, 8, 16])
    >>> len(block.losses)  # ponder_cost * mean(N + R)
    1
    >>> units = block.evaluated_units(x)  # per example, broadcast to (N, H, W)
    >>> units.shape, bool(1 <= np.min(units) and np.max(units) <= 5)
    (TensorShape([2, 8, 8]), True)
    """

    _spatial = False


@keras.saving.register_keras_serializable(package="tfpriors")
class SACTBlock(_ACTForward):
    """Spatially adaptive computation time (Figurnov et al. 2017): ACT per position.

    Halting logits per position are ``conv3x3(x_l) + w . mean_pool(x_l) + b``
    (``b`` starts at -3); each position has its own ``N``, ``R`` and ponder
    cost ``N + R`` (averaged over positions). A halted position keeps its
    features and is no longer updated. At inference a unit runs only at the
    active positions (gathered with the first convolution's receptive field
    when the unit has ``sparse_call``, as :class:`ResidualUnit` does), and not
    at all once every position halted.

    Args:
        unit_factory: callable returning one full residual unit (a Keras layer
            mapping (N, H, W, C) to the same shape, skip connection included),
            a layer to copy, or a serialized layer config.
        num_units: (keyword-only) number of units, >= 1.
        ponder_cost: (keyword-only) ``tau`` >= 0; change it during training
            with ``set_ponder_cost`` or ``tfpriors.callbacks.PonderCostSchedule``.
        sparse_inference: (keyword-only) evaluate units only where needed at
            inference.
        track_metrics: (keyword-only) update the ponder metric in ``call``.
        _spatial: (keyword-only) internal (see :class:`AdaptiveBlock`); leave it None.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``, with height, width and channels known.

    Output shape:
        ``(batch, height, width, channels)``, the input's.

    Example:
    >>> block = tfpriors.layers.SACTBlock(lambda: tfpriors.layers.ResidualUnit(16),
    ...                                   num_units=5, ponder_cost=0.01)
    >>> x = np.random.rand(2, 8, 8, 16).astype("float32")
    >>> block(x).shape
    TensorShape([2, 8, 8, 16])
    >>> units = block.evaluated_units(x)  # one count per position
    >>> units.shape, bool(1 <= np.min(units) and np.max(units) <= 5)
    (TensorShape([2, 8, 8]), True)
    """

    _spatial = True


@keras.saving.register_keras_serializable(package="tfpriors")
class ProbabilisticACTBlock(SeedStateMixin, AdaptiveBlock):
    """Probabilistic adaptive computation time (Figurnov, Sobolev & Vetrov 2018).

    Unit ``l`` ends with a latent halting variable ``z_l ~ Bernoulli(p_l)``
    (``p_l`` from the same halting heads as SACT; the last unit always
    halts); the number of iterations ``N`` is the first ``l`` with
    ``z_l = 1``, so ``q(N = n) = p_n prod_{l<n} (1 - p_l)``. The prior on
    ``N`` is a truncated geometric distribution, whose log-probability is
    linear in ``N``: the objective is the expected log-likelihood minus
    ``ponder_cost * E_q[N]`` (computed in closed form from the ``p_l``).

    Modes (they share every weight; switch with ``tfpriors.adaptive.set_mode``):

    * ``"relaxed"``: training samples ``z_l`` from a RelaxedBernoulli
      (Gumbel-sigmoid, ``temperature``) and outputs the stick-breaking mixture
      ``sum_l z_l prod_{k<l} (1 - z_k) x_l``; evaluation uses ``p_l`` instead
      of samples.
    * ``"discrete"``: samples ``z_l ~ Bernoulli(p_l)`` and outputs ``x_N``;
      training the halting heads needs REINFORCE, which
      ``tfpriors.models.AdaptiveModel`` adds (score-function estimator with a
      moving-average baseline).
    * ``"threshold"``: deterministic, ``z_l = [p_l > 0.5]``; inference
      evaluates units at running positions only (as SACT).

    Args:
        unit_factory: callable returning one full residual unit (a Keras layer
            mapping (N, H, W, C) to the same shape, skip connection included),
            a layer to copy, or a serialized layer config.
        num_units: (keyword-only) number of units, >= 1.
        ponder_cost: (keyword-only) the weight >= 0 of ``E_q[N]`` in the loss;
            change it during training with ``set_ponder_cost`` or
            ``tfpriors.callbacks.PonderCostSchedule``.
        mode: (keyword-only) ``"relaxed"``, ``"discrete"`` or ``"threshold"``.
        temperature: (keyword-only) relaxation temperature > 0 (a variable;
            ``tfpriors.callbacks.TemperatureSchedule`` anneals it).
        group_size: (keyword-only) one latent variable per
            ``group_size x group_size`` group of positions, default 1 (one per
            position); ``None`` means one per example.
        seed: (keyword-only) seed of the relaxed / discrete samples.
        **kwargs: ``sparse_inference`` and ``track_metrics`` as in
            :class:`ACTBlock`, and base ``keras.layers.Layer`` arguments
            (``name``, ``dtype``).

    Input shape:
        ``(batch, height, width, channels)``, with height, width and channels known.

    Output shape:
        ``(batch, height, width, channels)``, the input's.

    Example:
    >>> block = tfpriors.layers.ProbabilisticACTBlock(
    ...     lambda: tfpriors.layers.ResidualUnit(16), num_units=5, mode="relaxed")
    >>> x = np.random.rand(2, 8, 8, 16).astype("float32")
    >>> block(x, training=True).shape  # a RelaxedBernoulli sample per position
    TensorShape([2, 8, 8, 16])
    >>> len(block.losses)  # ponder_cost * E_q[N]
    1
    >>> model = keras.Sequential([keras.Input((8, 8, 16)), block])
    >>> tfpriors.adaptive.set_mode(model, "threshold")  # deterministic halting
    1
    >>> model(x).shape
    TensorShape([2, 8, 8, 16])
    """

    def __init__(
        self,
        unit_factory,
        *,
        num_units=5,
        ponder_cost=0.01,
        mode="relaxed",
        temperature=0.5,
        group_size=1,
        seed=None,
        **kwargs,
    ):
        mode = _validation.one_of(mode, "mode", set(MODES))
        temperature = _validation.positive_number(temperature, "temperature")
        group_size = (
            None if group_size is None else _validation.positive_int(group_size, "group_size")
        )
        super().__init__(
            unit_factory,
            num_units=num_units,
            ponder_cost=ponder_cost,
            _spatial=group_size is not None,
            **kwargs,
        )
        self.mode, self._temperature, self.group_size = mode, temperature, group_size
        self.seed = _validation.seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._log_q = None

    @property
    def temperature(self):
        return self._temperature

    def set_temperature(self, value):
        """Sets the relaxation temperature without retracing.

        Args:
            value: the new temperature, a number > 0.
        """
        self._temperature = _validation.positive_number(value, "temperature")
        if self.built:
            self.temperature_variable.assign(self._temperature)

    def build(self, input_shape):
        super().build(input_shape)
        self.temperature_variable = self.add_weight(
            name="temperature",
            shape=(),
            trainable=False,
            initializer=keras.initializers.Constant(self._temperature),
        )
        self.reinforce_baseline = self.add_weight(
            name="reinforce_baseline", shape=(), trainable=False, initializer="zeros"
        )

    def _halting_logits(self, index, x):
        logits = super()._halting_logits(index, x)
        if not self._spatial or self.group_size == 1:
            return logits
        g = self.group_size
        return tf.nn.avg_pool2d(logits[..., None], g, g, "SAME")[..., 0]

    def _broadcast(self, halting, x):
        if self._spatial and self.group_size > 1:
            g = self.group_size
            halting = tf.repeat(tf.repeat(halting, g, axis=1), g, axis=2)
            halting = halting[:, : x.shape[1], : x.shape[2]]
        return tf.broadcast_to(halting, tf.shape(x)[:3])

    def _forward(self, x, training, fast):
        if self.mode == "relaxed":
            return self._relaxed(x, training)
        return self._stopping(x, training, fast)

    def _batch_uniform(self, shape, dtype, minval=0.0):
        """Uniform draws of a batch-first ``shape``, the same however the batch is split."""
        return distributed.batch_rows(
            lambda s: keras.random.uniform(s, minval=minval, dtype=dtype, seed=self.seed_generator),
            shape,
        )

    def _relaxed(self, x, training):
        dtype = x.dtype
        state, outputs = x, tf.zeros_like(x)
        alive = None  # prod_{k<l} (1 - z_k); None before the first unit
        alive_p = None
        expected = None
        for index in range(self.num_units):
            state = self.units[index](state, training=training)
            if index == self.num_units - 1:
                weight = alive
                stop_p = alive_p
            else:
                logits = self._halting_logits(index, state)
                probs = ops.sigmoid(logits)
                if training:
                    # A RelaxedBernoulli sample, sigmoid((logits + logistic
                    # noise) / temperature), written out so that the uniform
                    # draw covers the global batch under a strategy. Logits are
                    # clipped: beyond +-20 the float32 sample is already 0 or 1.
                    tiny = float(np.finfo(dtype.as_numpy_dtype).tiny)
                    uniform = self._batch_uniform(tf.shape(logits), dtype, minval=tiny)
                    logistic = tf.math.log(uniform) - tf.math.log1p(-uniform)
                    clipped = tf.clip_by_value(logits, -RELAXED_LOGIT_LIMIT, RELAXED_LOGIT_LIMIT)
                    z = tf.sigmoid((clipped + logistic) / tf.cast(self.temperature_variable, dtype))
                else:
                    z = probs
                weight = z if alive is None else alive * z
                stop_p = probs if alive_p is None else alive_p * probs
                alive = 1.0 - z if alive is None else alive * (1.0 - z)
                alive_p = 1.0 - probs if alive_p is None else alive_p * (1.0 - probs)
            if weight is None:  # a single unit
                weight = stop_p = tf.ones(self._halting_shape(x), dtype)
            term = (index + 1.0) * stop_p
            expected = term if expected is None else expected + term
            outputs += self._broadcast(weight, x)[..., None] * state
        counts = tf.fill(tf.shape(x)[:3], tf.cast(self.num_units, dtype))
        return outputs, counts, self._per_example(expected)

    def _halting_shape(self, x):
        if not self._spatial or self.group_size == 1:
            return super()._halting_shape(x)
        g = self.group_size
        return tf.stack([tf.shape(x)[0], -(-x.shape[1] // g), -(-x.shape[2] // g)])

    @staticmethod
    def _per_example(values):
        return tf.reduce_mean(tf.reshape(values, (tf.shape(values)[0], -1)), axis=1)

    def _stopping(self, x, training, fast):
        """Discrete or threshold halting: units update running positions; output x_N."""
        dtype = x.dtype
        shape = self._halting_shape(x)
        running = tf.ones(shape, tf.bool)
        counts = tf.zeros(shape, dtype)
        alive_p = tf.ones(shape, dtype)
        expected = tf.zeros(shape, dtype)
        log_q = tf.zeros(shape, dtype)
        state = x
        sample = self.mode == "discrete"
        for index in range(self.num_units):
            last = index == self.num_units - 1
            state, logits = self._unit_and_halting(
                index,
                state,
                running,
                x,
                training,
                fast,
                lambda logits: logits,
                lambda: tf.zeros(shape, dtype),
            )
            counts += tf.cast(running, dtype)
            if last:
                halts = running
                expected += (index + 1.0) * alive_p
            else:
                probs = ops.sigmoid(logits)
                if sample:
                    uniform = self._batch_uniform(shape, dtype)
                    z = uniform < probs
                else:
                    z = logits > 0.0
                halts = running & z
                expected += (index + 1.0) * alive_p * probs
                alive_p *= 1.0 - probs
                log_q += tf.where(
                    running,
                    tf.where(z, tf.math.log_sigmoid(logits), tf.math.log_sigmoid(-logits)),
                    0.0,
                )
            running = running & ~halts
        if sample and training:
            self._log_q = tf.reduce_sum(tf.reshape(log_q, (tf.shape(x)[0], -1)), axis=1)
        return state, self._broadcast(counts, x), self._per_example(expected)

    def call(self, inputs, training=False):
        self._log_q = None
        return super().call(inputs, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mode": self.mode,
                "temperature": self._temperature,
                "group_size": self.group_size,
                "seed": self.seed,
            }
        )
        return config


def adaptive_blocks(model):
    """The adaptive blocks of ``model`` (nested ones included), in model order.

    Args:
        model: a Keras model; a block passed alone is not listed (only the
            layers inside ``model`` are).

    Returns:
        A list of :class:`AdaptiveBlock` layers.

    Example:
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 8)),
    ...     tfpriors.layers.ACTBlock(lambda: tfpriors.layers.ResidualUnit(8), num_units=2,
    ...                              name="block1"),
    ...     keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(10)])
    >>> [block.name for block in tfpriors.adaptive.adaptive_blocks(model)]
    ['block1']
    """
    return [layer for layer in walk(model) if isinstance(layer, AdaptiveBlock)]
