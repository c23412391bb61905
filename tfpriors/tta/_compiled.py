"""Compiled pieces of TTAPredictor: all draws of a batch augmented in one graph call.

:class:`TTAPredictor` used to augment every draw eagerly (a dozen small
TensorFlow ops per transform, each dispatched from Python) and to call the
models eagerly, where Keras runs every layer op by op and TensorFlow's graph
rewrites (oneDNN's fused convolution, bias and activation) never apply. Here
the ``num_samples`` draws of a batch are stacked and augmented in one traced
function, and each Keras model is called through one cached traced function.

The augmentation graph does not depend on the policy: each draw is encoded
as op indices and magnitude bounds, one per position of the longest
sub-policy (shorter ones padded with the identity), and at every position
the stacked images are partitioned by op, each op transforms its share, and
the shares are stitched back. One trace per number of positions and image
shape serves every policy, Greedy Policy Search's pools included. When every
draw has the same sub-policy (a one-sub-policy policy such as shift+rotate)
a second graph skips the partition: each position's op (chosen by
``tf.switch_case``) transforms the whole stack, about a quarter faster.

Randomness is stateless: each call takes a seed tensor and every random draw
inside derives its own seed from it, so results do not depend on call order.
"""

import weakref

import keras
import numpy as np
import tensorflow as tf

from tfpriors.tta import transforms

# Op order of the augmentation graph; index len(_NAMES) is the identity.
_NAMES = tuple(transforms.available())
IDENTITY = len(_NAMES)


class _DerivedSeeds(keras.random.SeedGenerator):
    """Stands in for a SeedGenerator inside a traced function: stateless draws.

    ``keras.random`` functions accept an int or a SeedGenerator; this one
    hands out seeds derived from a seed tensor and a counter advanced at
    trace time, so each draw in the graph gets its own fixed derivation.
    """

    def __init__(self, seed):  # noqa: B903 (no Keras state: nothing to initialize)
        self._base = seed
        self._count = 0

    def next(self, ordered=True):
        del ordered
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)


def encode(subpolicies):
    """Op indices and magnitude bounds ``(draws, positions)`` of a list of sub-policies.

    Positions beyond a sub-policy's length hold the identity; a list of
    empty sub-policies gives zero positions.
    """
    positions = max(len(sub) for sub in subpolicies)
    indices = [
        [_NAMES.index(name) for name, _ in sub] + [IDENTITY] * (positions - len(sub))
        for sub in subpolicies
    ]
    bounds = [[float(m) for _, m in sub] + [0.0] * (positions - len(sub)) for sub in subpolicies]
    return (
        np.array(indices, np.int32).reshape(len(subpolicies), positions),
        np.array(bounds, np.float32).reshape(len(subpolicies), positions),
    )


def _apply_op(op, images, bounds, seeds):
    """Op ``op`` on ``images``, each with its own magnitude drawn in ``[-bound, bound]``."""
    count = tf.shape(images)[0]
    m = (2.0 * keras.random.uniform((count,), seed=seeds) - 1.0) * bounds
    value = op.value(tf.abs(m))
    if op.signed:
        value = tf.where(keras.random.uniform((count,), seed=seeds) < 0.5, -1.0, 1.0) * value
    return op.fn(images, value, seeds)


def _augment_draws(images, indices, bounds, seed):
    """``images`` tiled once per draw, draw ``s`` transformed by row ``s`` of the encoding.

    Rows ``s * n .. (s + 1) * n - 1`` of the result are draw ``s`` of the
    ``n`` images (the draw-major order that the predictor reshapes).
    """
    draws, count = tf.shape(indices)[0], tf.shape(images)[0]
    stacked = tf.tile(images, [draws, 1, 1, 1])
    rows = tf.range(draws * count)
    seeds = _DerivedSeeds(seed)
    for position in range(indices.shape[1]):
        ops = tf.repeat(indices[:, position], count)
        per_image = tf.repeat(bounds[:, position], count)
        parts = tf.dynamic_partition(stacked, ops, IDENTITY + 1)
        part_bounds = tf.dynamic_partition(per_image, ops, IDENTITY + 1)
        part_rows = tf.dynamic_partition(rows, ops, IDENTITY + 1)
        outputs = []
        for index, name in enumerate(_NAMES):
            part, op = parts[index], transforms.get(name)
            # Ops absent from every draw of this call skip their work.
            outputs.append(
                tf.cond(
                    tf.shape(part)[0] > 0,
                    lambda part=part, op=op, index=index: _apply_op(
                        op, part, part_bounds[index], seeds
                    ),
                    lambda part=part: part,
                )
            )
        outputs.append(parts[IDENTITY])
        stacked = tf.ensure_shape(tf.dynamic_stitch(part_rows, outputs), [None, *images.shape[1:]])
    return stacked


def _augment_uniform(images, indices, bounds, seed, draws):
    """Like :func:`_augment_draws` when every draw has the same sub-policy.

    ``indices`` and ``bounds`` are then one row ``(positions,)``: each
    position applies its op to the whole stack, with no partition.
    """
    stacked = tf.tile(images, [draws, 1, 1, 1])
    seeds = _DerivedSeeds(seed)
    for position in range(indices.shape[0]):
        per_image = tf.fill(tf.shape(stacked)[:1], bounds[position])
        branches = [
            lambda op=transforms.get(name), images=stacked, bound=per_image: _apply_op(
                op, images, bound, seeds
            )
            for name in _NAMES
        ] + [lambda images=stacked: images]
        stacked = tf.ensure_shape(
            tf.switch_case(indices[position], branches), [None, *images.shape[1:]]
        )
    return stacked


# Traced functions per (kind, number of positions, image shape): the Python
# loops' lengths and the signature's shapes.
_AUGMENTERS = {}


def _augmenter(uniform, positions, shape):
    key = (uniform, positions, shape)
    if key not in _AUGMENTERS:
        images = tf.TensorSpec((None, *shape), tf.float32)
        seed = tf.TensorSpec((2,), tf.int32)
        if uniform:
            function = _augment_uniform
            signature = [
                images,
                tf.TensorSpec((positions,), tf.int32),
                tf.TensorSpec((positions,), tf.float32),
                seed,
                tf.TensorSpec((), tf.int32),
            ]
        else:
            function = _augment_draws
            signature = [
                images,
                tf.TensorSpec((None, positions), tf.int32),
                tf.TensorSpec((None, positions), tf.float32),
                seed,
            ]
        # Any batch and draw count: one trace per key, however the batches vary.
        _AUGMENTERS[key] = tf.function(function, input_signature=signature)
    return _AUGMENTERS[key]


def augment_draws(images, indices, bounds, seed):
    """Every draw of ``images`` in one graph call; see :func:`_augment_draws`.

    Args:
        images: a float32 tensor ``(n, height, width, channels)``.
        indices: int32 ``(draws, positions)`` from :func:`encode`.
        bounds: float32 ``(draws, positions)`` from :func:`encode`.
        seed: int32 ``(2,)``, the seed of every random draw of this call.

    Returns:
        A float32 tensor ``(draws * n, height, width, channels)``.
    """
    indices, bounds = np.asarray(indices, np.int32), np.asarray(bounds, np.float32)
    draws, positions = indices.shape
    shape = tuple(images.shape[1:])
    if np.all(indices == indices[:1]) and np.all(bounds == bounds[:1]):
        # One sub-policy for every draw: whole-stack ops, no partition and stitch.
        augment = _augmenter(True, positions, shape)
        return augment(images, indices[0], bounds[0], seed, np.int32(draws))
    return _augmenter(False, positions, shape)(images, indices, bounds, seed)


# model -> its traced inference call; weak keys, so a model's graph goes with it.
_GRAPH_CALLS = weakref.WeakKeyDictionary()


def graph_call(model):
    """A traced ``model(inputs, training=False)``, cached per Keras model.

    Args:
        model: a ``keras.layers.Layer`` (a model).

    Returns:
        A function of a batch returning the model's outputs as a tensor.
    """
    call = _GRAPH_CALLS.get(model)
    if call is None:
        reference = weakref.ref(model)  # the graph must not keep its model alive
        traced = tf.function(
            lambda inputs: reference()(inputs, training=False), reduce_retracing=True
        )
        _GRAPH_CALLS[model] = traced
        call = traced
    return lambda inputs: call(tf.convert_to_tensor(inputs))


def check_images(x):
    """``x`` as a float32 tensor of images ``(n, height, width, 1 or 3)``.

    Raises:
        ValueError: naming ``images``, for another shape or a non-float dtype.
    """
    return transforms._check_images(x)
