"""CIFAR-style ResNets whose residual stages are plain, ACT, SACT or probabilistic ACT."""

import keras
import tensorflow as tf

from tfpriors import _validation
from tfpriors.layers.adaptive import (
    BASELINE_DECAY,
    MODES,
    ACTBlock,
    ProbabilisticACTBlock,
    ResidualUnit,
    SACTBlock,
    adaptive_blocks,
)
from tfpriors.models.lenet import check_common

KINDS = ("plain", "act", "sact", "pact")
# Channels of the first stage when `widths` is not given; each next stage doubles them.
DEFAULT_WIDTH = 16


@keras.saving.register_keras_serializable(package="tfpriors")
class AdaptiveModel(keras.Model):
    """A functional model that trains discrete probabilistic ACT blocks with REINFORCE.

    Built like any functional model (``AdaptiveModel(inputs, outputs)``); it
    behaves exactly as ``keras.Model`` unless a
    :class:`~tfpriors.layers.ProbabilisticACTBlock` is in ``"discrete"`` mode
    during training. Then the halting heads get the score-function gradient
    ``(loss_i - b) * grad log q(N_i)`` per example, with ``b`` a moving
    average of the loss (the block's ``reinforce_baseline``). The surrogate
    term is added as ``t - stop_gradient(t)``, so the logged loss is not
    changed by it. The per-example loss is the sparse categorical cross-entropy
    of logits (the output of :func:`act_resnet`).

    Example:
    >>> (x, y), _ = tfpriors.datasets.load_digits(flat=False)
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2, 2), widths=(4, 8),
    ...                                    kind="pact", mode="discrete")
    >>> isinstance(model, tfpriors.models.AdaptiveModel)
    True
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = model.fit(x[:32], y[:32], batch_size=32, verbose=0)
    >>> blocks = tfpriors.adaptive.adaptive_blocks(model)
    >>> all(float(block.reinforce_baseline) > 0 for block in blocks)  # moving average of the loss
    True
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if not training or y is None:
            return loss
        for block in adaptive_blocks(self):
            log_q = getattr(block, "_log_q", None)
            if log_q is None:
                continue
            reward = tf.stop_gradient(
                keras.losses.sparse_categorical_crossentropy(y, y_pred, from_logits=True)
            )
            advantage = reward - block.reinforce_baseline
            surrogate = tf.reduce_mean(advantage * tf.cast(log_q, reward.dtype))
            loss = loss + surrogate - tf.stop_gradient(surrogate)
            decay = BASELINE_DECAY
            block.reinforce_baseline.assign(
                decay * block.reinforce_baseline + (1.0 - decay) * tf.reduce_mean(reward)
            )
        return loss


def act_resnet(
    input_shape,
    num_classes,
    blocks=(3, 3, 3),
    kind="sact",
    widths=None,
    ponder_cost=0.01,
    mode="relaxed",
    temperature=0.5,
    group_size=1,
    synchronized_batch_norm=False,
    name=None,
):
    """A CIFAR-style ResNet (He et al. 2016) with adaptive residual stages.

    A 3x3 stem convolution, then one stage per entry of ``blocks``: stage
    ``s`` has ``blocks[s]`` residual units of ``widths[s]`` channels; from the
    second stage on its first unit halves the resolution (always evaluated,
    like in the SACT paper), and the remaining units form one adaptive block
    (``kind``) or plain units (``"plain"``). Global average pooling and a
    Dense layer give the logits. ``blocks=(5, 5, 5)`` with the default widths
    (16, 32, 64) is the ResNet-32 of the SACT paper; ``blocks=(3, 3, 3),
    widths=(8, 16, 32)`` suits 8x8 digits.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: number of logits.
        blocks: units per stage (positive ints).
        kind: ``"plain"``, ``"act"``, ``"sact"`` or ``"pact"``.
        widths: channels per stage, as many as ``blocks``; default 16 for the
            first stage, doubled at each next one (``(16, 32)`` for two
            stages, ``(16, 32, 64)`` for three).
        ponder_cost: ``tau`` of the adaptive blocks.
        mode: ``"relaxed"``, ``"discrete"`` or ``"threshold"``: the mode of the
            probabilistic ACT blocks (``kind="pact"``).
        temperature: relaxation temperature of the probabilistic ACT blocks
            (``kind="pact"``).
        group_size: one latent halting variable per ``group_size x group_size``
            group of positions in the probabilistic ACT blocks (``kind="pact"``).
        synchronized_batch_norm: batch statistics of the global batch under a
            ``tf.distribute`` strategy (see :class:`~tfpriors.layers.ResidualUnit`).
        name: the model's name; default ``"<kind>_resnet"``.

    Returns:
        An :class:`AdaptiveModel` (a functional Keras model) producing logits.

    Example:
    >>> model = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(3, 3, 3), kind="sact",
    ...                                    widths=(8, 16, 32))
    >>> [(block.name, block.num_units) for block in tfpriors.adaptive.adaptive_blocks(model)]
    [('stage0_sact', 3), ('stage1_sact', 2), ('stage2_sact', 2)]
    >>> model.name, model.output_shape
    ('sact_resnet', (None, 10))
    >>> two_stages = tfpriors.models.act_resnet((8, 8, 1), 10, blocks=(2, 2))  # widths (16, 32)
    >>> two_stages.get_layer("stage1_down").filters
    32
    """
    input_shape, num_classes = check_common(input_shape, num_classes)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` of act_resnet must be (height, width, channels); "
            f"received {input_shape}."
        )
    kind = _validation.one_of(kind, "kind", set(KINDS))
    if isinstance(blocks, (int, str)) or not blocks:
        raise ValueError(
            f"`blocks` must be a non-empty tuple of positive ints; received {blocks!r}."
        )
    blocks = tuple(_validation.positive_int(b, "blocks") for b in blocks)
    if widths is None:
        widths = tuple(DEFAULT_WIDTH * 2**stage for stage in range(len(blocks)))
    if isinstance(widths, (int, str)) or not isinstance(widths, (list, tuple)):
        raise TypeError(f"`widths` must be None or a tuple of positive ints; received {widths!r}.")
    widths = tuple(_validation.positive_int(w, "widths") for w in widths)
    if len(widths) != len(blocks):
        raise ValueError(
            f"`widths` must have one entry per stage of `blocks` ({len(blocks)}); "
            f"received {widths}."
        )
    block_kwargs = {"ponder_cost": ponder_cost}
    # Checked whatever the kind, so that a wrong one is never dropped silently.
    pact_kwargs = {
        "mode": _validation.one_of(mode, "mode", set(MODES)),
        "temperature": _validation.positive_number(temperature, "temperature"),
        "group_size": None
        if group_size is None
        else _validation.positive_int(group_size, "group_size"),
    }
    if kind == "pact":
        block_class = ProbabilisticACTBlock
        block_kwargs.update(pact_kwargs)
    else:
        block_class = {"act": ACTBlock, "sact": SACTBlock}.get(kind)

    unit_kwargs = {
        "synchronized_batch_norm": _validation.boolean(
            synchronized_batch_norm, "synchronized_batch_norm"
        )
    }
    inputs = keras.Input(input_shape)
    h = keras.layers.Conv2D(
        widths[0], 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem"
    )(inputs)
    h = keras.layers.BatchNormalization(
        momentum=0.9, synchronized=synchronized_batch_norm, name="stem_bn"
    )(h)
    h = keras.layers.ReLU(name="stem_relu")(h)
    for stage, (units, width) in enumerate(zip(blocks, widths)):
        if stage > 0:
            h = ResidualUnit(width, strides=2, name=f"stage{stage}_down", **unit_kwargs)(h)
            units -= 1
        if units == 0:
            continue
        if block_class is None:
            for i in range(units):
                h = ResidualUnit(width, name=f"stage{stage}_unit{i}", **unit_kwargs)(h)
        else:
            h = block_class(
                ResidualUnit(width, **unit_kwargs),
                num_units=units,
                name=f"stage{stage}_{kind}",
                **block_kwargs,
            )(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return AdaptiveModel(inputs, outputs, name=name or f"{kind}_resnet")
