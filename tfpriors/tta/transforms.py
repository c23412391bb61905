"""Image transforms for test-time augmentation, batched with per-image random parameters.

Every op has a magnitude range ``(low, high)``. An integer-scale magnitude
``m`` in [0, 30] maps to ``value = m / 30 * (high - low) + low`` (the
convention of AutoAugment and Greedy Policy Search). :func:`apply` draws
``m ~ U[-M, M]`` independently for every image; the value uses ``|m|``, and
signed ops (geometric shifts, enhancements) give it a random sign per image,
so a bound ``M`` covers both directions.

Images are float tensors ``(batch, height, width, channels)`` in [0, 1] with
1 (grayscale) or 3 (RGB) channels. Each op is a few batched TensorFlow ops:
no Python loop over images.

Example:
>>> from tfpriors.tta import transforms
>>> transforms.available()[:4]
['autocontrast', 'brightness', 'color', 'contrast']
>>> (images, _), _ = tfpriors.datasets.load_digits(flat=False)
>>> augmented = transforms.apply("rotate", images[:16], magnitude=9, seed=0)
>>> augmented.shape, augmented.dtype.name
(TensorShape([16, 8, 8, 1]), 'float32')
"""

import dataclasses

import keras
import tensorflow as tf

from tfpriors import _validation

MAX_MAGNITUDE = 30


@dataclasses.dataclass(frozen=True)
class Op:
    """One transform: its name, magnitude range, sign rule and batched function.

    ``fn(images, values, seed)`` receives one value per image (float32, shape
    ``(batch,)``) already mapped from the magnitude.

    Attributes:
        name: the op's name, as :func:`available` lists it.
        low: the value at magnitude 0.
        high: the value at magnitude 30.
        signed: whether each image gets a random sign of its value.
        fn: the batched function ``fn(images, values, seed)``.

    Example:
    >>> op = tfpriors.tta.transforms.get("rotate")
    >>> op.name, op.low, op.high, op.signed
    ('rotate', 0.0, 30.0, True)
    """

    name: str
    low: float
    high: float
    signed: bool
    fn: object

    def value(self, magnitude):
        """The op's value for a magnitude on the 0..30 scale (a float or a tensor).

        Args:
            magnitude: a magnitude in [0, 30], a float or a tensor.

        Returns:
            ``magnitude / 30 * (high - low) + low``, of the magnitude's type.

        Example:
        >>> tfpriors.tta.transforms.get("rotate").value(9)
        9.0
        >>> tfpriors.tta.transforms.get("posterize").value(15)
        6.0
        """
        return magnitude / MAX_MAGNITUDE * (self.high - self.low) + self.low


def _blend(degenerate, images, factor):
    # PIL's ImageEnhance: factor 0 gives the degenerate image, 1 the original.
    factor = tf.reshape(factor, (-1, 1, 1, 1))
    return tf.clip_by_value(degenerate + factor * (images - degenerate), 0.0, 1.0)


def _grayscale(images):
    if images.shape[-1] == 1:
        return images
    gray = tf.image.rgb_to_grayscale(images)
    return tf.broadcast_to(gray, tf.shape(images))


def _projective(images, transforms, fill_mode="CONSTANT"):
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode=fill_mode,
    )


def _affine(images, a0, a1, a2, b0, b1, b2, fill_mode="CONSTANT"):
    zeros = tf.zeros_like(a0)
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
    return _projective(images, transforms, fill_mode)


def _rotate(images, degrees, seed):
    del seed
    shape = tf.cast(tf.shape(images), tf.float32)
    height, width = shape[1], shape[2]
    angle = degrees * (3.141592653589793 / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Rotation about the image centre, expressed as output -> input coordinates.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    return _affine(images, cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


def _shear_x(images, amount, seed):
    del seed
    ones, zeros = tf.ones_like(amount), tf.zeros_like(amount)
    cy = (tf.cast(tf.shape(images)[1], tf.float32) - 1) / 2
    return _affine(images, ones, amount, -amount * cy, zeros, ones, zeros)


def _shear_y(images, amount, seed):
    del seed
    ones, zeros = tf.ones_like(amount), tf.zeros_like(amount)
    cx = (tf.cast(tf.shape(images)[2], tf.float32) - 1) / 2
    return _affine(images, ones, zeros, zeros, amount, ones, -amount * cx)


def _translate_x(images, fraction, seed):
    del seed
    ones, zeros = tf.ones_like(fraction), tf.zeros_like(fraction)
    shift = fraction * tf.cast(tf.shape(images)[2], tf.float32)
    return _affine(images, ones, zeros, -shift, zeros, ones, zeros)


def _translate_y(images, fraction, seed):
    del seed
    ones, zeros = tf.ones_like(fraction), tf.zeros_like(fraction)
    shift = fraction * tf.cast(tf.shape(images)[1], tf.float32)
    return _affine(images, ones, zeros, zeros, zeros, ones, -shift)


def _crop(images, fraction, seed):
    """Random crop of the padded image: shifts by up to ``fraction`` of the size each way."""
    batch = tf.shape(images)[0]
    size = tf.cast(tf.shape(images)[1:3], tf.float32)
    limit = tf.abs(fraction)[:, None] * size[None, :]
    offsets = tf.round(keras.random.uniform((batch, 2), -1.0, 1.0, seed=seed) * limit)
    ones, zeros = tf.ones_like(fraction), tf.zeros_like(fraction)
    return _affine(
        images, ones, zeros, offsets[:, 1], zeros, ones, offsets[:, 0], fill_mode="REFLECT"
    )


def _flip(images, value, seed):
    """Mirrors each image left-right with probability 0.5."""
    del value
    batch = tf.shape(images)[0]
    flip = keras.random.uniform((batch, 1, 1, 1), seed=seed) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def _brightness(images, value, seed):
    del seed
    return _blend(tf.zeros_like(images), images, 1.0 + value)


def _contrast(images, value, seed):
    del seed
    mean = tf.reduce_mean(_grayscale(images), axis=[1, 2, 3], keepdims=True)
    return _blend(tf.broadcast_to(mean, tf.shape(images)), images, 1.0 + value)


def _color(images, value, seed):
    del seed
    return _blend(_grayscale(images), images, 1.0 + value)


def _sharpness(images, value, seed):
    del seed
    channels = images.shape[-1]
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME")
    # Like PIL, only the interior is smoothed; the one-pixel border stays as it is.
    mask = tf.pad(tf.ones_like(images[:, 1:-1, 1:-1, :]), [[0, 0], [1, 1], [1, 1], [0, 0]])
    degenerate = mask * smooth + (1.0 - mask) * images
    return _blend(degenerate, images, 1.0 + value)


def _posterize(images, bits, seed):
    del seed
    bits = tf.reshape(tf.clip_by_value(tf.round(bits), 1.0, 8.0), (-1, 1, 1, 1))
    step = tf.pow(2.0, 8.0 - bits)
    levels = tf.round(images * 255.0)
    return tf.floor(levels / step) * step / 255.0


def _solarize(images, threshold, seed):
    del seed
    threshold = tf.reshape(threshold, (-1, 1, 1, 1))
    return tf.where(images >= threshold, 1.0 - images, images)


def _autocontrast(images, value, seed):
    del value, seed
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    scale = tf.where(high > low, 1.0 / tf.maximum(high - low, 1e-6), 1.0)
    offset = tf.where(high > low, low, 0.0)
    return tf.clip_by_value((images - offset) * scale, 0.0, 1.0)


def _equalize(images, value, seed):
    """Histogram equalization of every channel of every image (256 levels)."""
    del value, seed
    shape = tf.shape(images)
    levels = tf.cast(tf.round(images * 255.0), tf.int32)
    # One row per (image, channel): histograms and lookups for all at once.
    rows = tf.reshape(tf.transpose(levels, [0, 3, 1, 2]), (shape[0] * shape[3], -1))
    histogram = tf.math.bincount(rows, minlength=256, maxlength=256, axis=-1)
    cdf = tf.cast(tf.cumsum(histogram, axis=1), tf.float32)
    cdf_min = tf.reduce_min(tf.where(histogram > 0, cdf, tf.float32.max), axis=1, keepdims=True)
    total = cdf[:, -1:]
    lookup = tf.where(
        total > cdf_min,
        (cdf - cdf_min) / tf.maximum(total - cdf_min, 1.0),
        tf.cast(tf.range(256), tf.float32)[None, :] / 255.0,
    )
    equalized = tf.gather(lookup, rows, batch_dims=1)
    equalized = tf.reshape(equalized, (shape[0], shape[3], shape[1], shape[2]))
    return tf.transpose(equalized, [0, 2, 3, 1])


def _invert(images, value, seed):
    del value, seed
    return 1.0 - images


_OPS = {
    op.name: op
    for op in [
        Op("rotate", 0.0, 30.0, True, _rotate),  # degrees
        Op("shear_x", 0.0, 0.3, True, _shear_x),
        Op("shear_y", 0.0, 0.3, True, _shear_y),
        Op("translate_x", 0.0, 0.45, True, _translate_x),  # fraction of the width
        Op("translate_y", 0.0, 0.45, True, _translate_y),
        Op("crop", 0.0, 0.25, False, _crop),  # fraction of the size, reflect pad
        Op("flip", 0.0, 0.0, False, _flip),
        Op("brightness", 0.0, 0.9, True, _brightness),  # enhance factor 1 + value
        Op("contrast", 0.0, 0.9, True, _contrast),
        Op("color", 0.0, 0.9, True, _color),
        Op("sharpness", 0.0, 0.9, True, _sharpness),
        Op("posterize", 8.0, 4.0, False, _posterize),  # bits kept
        Op("solarize", 1.0, 0.0, False, _solarize),  # threshold
        Op("autocontrast", 0.0, 0.0, False, _autocontrast),
        Op("equalize", 0.0, 0.0, False, _equalize),
        Op("invert", 0.0, 0.0, False, _invert),
    ]
}


def available():
    """Names of all transforms, sorted.

    Returns:
        A list of strings.

    Example:
    >>> tfpriors.tta.transforms.available()
    ['autocontrast', 'brightness', 'color', 'contrast', 'crop', 'equalize', 'flip', 'invert',
     'posterize', 'rotate', 'sharpness', 'shear_x', 'shear_y', 'solarize', 'translate_x',
     'translate_y']
    """
    return sorted(_OPS)


def get(name):
    """The :class:`Op` called ``name``.

    Args:
        name: one of :func:`available`.

    Returns:
        The :class:`Op`.

    Raises:
        ValueError: for an unknown name.

    Example:
    >>> op = tfpriors.tta.transforms.get("translate_x")
    >>> op.high
    0.45
    """
    if not isinstance(name, str) or name not in _OPS:
        raise ValueError(
            f"`name` must be a transform's name; received {name!r}; available: {available()}."
        )
    return _OPS[name]


def _check_images(images):
    if not tf.is_tensor(images):
        images = _validation.numeric_array(images, "images", dtype=None)
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "`images` must have shape (batch, height, width, 1 or 3); "
            f"received {tuple(images.shape)}."
        )
    if not images.dtype.is_floating:
        raise ValueError(f"`images` must be float in [0, 1]; received dtype {images.dtype.name}.")
    return tf.cast(images, tf.float32)


def apply(name, images, magnitude, seed=None):
    """Applies transform ``name`` to every image with its own random magnitude.

    Args:
        name: one of :func:`available`.
        images: float ``(batch, height, width, 1 or 3)`` in [0, 1].
        magnitude: the bound ``M`` in [0, 30]; each image draws ``m ~ U[-M, M]``.
        seed: an int or a ``keras.random.SeedGenerator`` for reproducible draws.

    Returns:
        The transformed images, float32, same shape.

    Example:
    >>> (images, _), _ = tfpriors.datasets.load_digits(flat=False)
    >>> flipped = tfpriors.tta.transforms.apply("flip", images[:8], magnitude=0, seed=1)
    >>> flipped.shape
    TensorShape([8, 8, 8, 1])
    >>> inverted = tfpriors.tta.transforms.apply("invert", images[:8], magnitude=0)
    >>> bool(np.allclose(inverted, 1.0 - images[:8]))
    True
    """
    op = get(name)
    magnitude = _validation.real_number(magnitude, "magnitude", minimum=0.0, maximum=MAX_MAGNITUDE)
    images = _check_images(images)
    if not isinstance(seed, keras.random.SeedGenerator):
        seed = _validation.seed(seed)
        seed = keras.random.SeedGenerator(seed) if seed is not None else None
    batch = tf.shape(images)[0]
    m = keras.random.uniform((batch,), -magnitude, magnitude, seed=seed)
    value = op.value(tf.abs(m))
    if op.signed:
        sign = tf.where(keras.random.uniform((batch,), seed=seed) < 0.5, -1.0, 1.0)
        value = sign * value
    return op.fn(images, value, seed)
