import numpy as np
import pytest
import tensorflow as tf

from tfpriors.tta import transforms

GEOMETRIC = ["rotate", "shear_x", "shear_y", "translate_x", "translate_y"]
ENHANCE = ["brightness", "color", "contrast", "sharpness"]


@pytest.fixture(scope="module")
def images():
    return tf.random.stateless_uniform((6, 12, 12, 3), seed=[1, 2])


@pytest.mark.parametrize("name", transforms.available())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_op_keeps_shape_range_and_is_seeded(name, channels, images):
    x = images[..., :channels]
    y = transforms.apply(name, x, magnitude=15, seed=3)
    assert y.shape == x.shape and y.dtype == tf.float32
    assert float(tf.reduce_min(y)) >= 0.0 and float(tf.reduce_max(y)) <= 1.0
    np.testing.assert_array_equal(y, transforms.apply(name, x, magnitude=15, seed=3))


@pytest.mark.parametrize("name", GEOMETRIC + ENHANCE + ["crop"])
def test_magnitude_zero_is_identity(name, images):
    y = transforms.apply(name, images, magnitude=0, seed=0)
    np.testing.assert_allclose(y, images, atol=1e-5)


@pytest.mark.parametrize("name", GEOMETRIC + ENHANCE + ["solarize", "posterize", "flip"])
def test_parameters_are_drawn_per_image(name):
    same = tf.tile(tf.random.stateless_uniform((1, 12, 12, 3), seed=[4, 5]), [16, 1, 1, 1])
    y = transforms.apply(name, same, magnitude=30, seed=1).numpy()
    distinct = {y[i].tobytes() for i in range(len(y))}
    assert len(distinct) > 1


def test_value_mapping_follows_the_gps_convention():
    op = transforms.get("rotate")
    assert op.value(0) == 0.0 and op.value(30) == 30.0 and op.value(15) == 15.0
    posterize = transforms.get("posterize")
    assert posterize.value(0) == 8.0 and posterize.value(30) == 4.0


def test_ops_against_direct_computation(images):
    x = images
    batch = x.shape[0]
    np.testing.assert_allclose(transforms.get("invert").fn(x, None, None), 1.0 - x)
    # A translation by a quarter of the width moves content by 3 pixels.
    shifted = transforms.get("translate_x").fn(x, tf.fill((batch,), 0.25), None)
    np.testing.assert_allclose(shifted[:, :, 3:], x[:, :, :-3], atol=1e-6)
    np.testing.assert_allclose(shifted[:, :, :3], 0.0)
    # 90 degrees about the centre of a square image is a rot90.
    rotated = transforms.get("rotate").fn(x, tf.fill((batch,), 90.0), None)
    np.testing.assert_allclose(rotated, tf.image.rot90(x, k=1), atol=1e-4)
    # Brightness factor 1 + value scales the pixels.
    darker = transforms.get("brightness").fn(x, tf.fill((batch,), -0.5), None)
    np.testing.assert_allclose(darker, 0.5 * x, atol=1e-6)
    # Solarize inverts the pixels above the threshold only.
    solar = transforms.get("solarize").fn(x, tf.fill((batch,), 0.5), None)
    np.testing.assert_allclose(solar, np.where(x >= 0.5, 1 - x, x))
    # Posterize to 1 bit leaves two levels.
    levels = np.unique(transforms.get("posterize").fn(x, tf.fill((batch,), 1.0), None))
    np.testing.assert_allclose(levels, [0.0, 128 / 255], rtol=1e-6)


def test_flip_either_mirrors_or_keeps_each_image(images):
    y = transforms.apply("flip", images, magnitude=0, seed=7).numpy()
    mirrored = images.numpy()[:, :, ::-1]
    for i in range(len(y)):
        assert np.array_equal(y[i], images[i]) or np.array_equal(y[i], mirrored[i])


def test_autocontrast_and_equalize_stretch_low_contrast_images():
    dull = 0.4 + 0.2 * tf.random.stateless_uniform((3, 10, 10, 1), seed=[7, 8])
    for name in ("autocontrast", "equalize"):
        y = transforms.apply(name, dull, magnitude=0, seed=0)
        assert float(tf.reduce_min(y)) < 0.05 and float(tf.reduce_max(y)) > 0.95
        # Both keep the order of pixel values within an image.
        order = np.argsort(dull[0].numpy().ravel(), kind="stable")
        assert np.all(np.diff(y[0].numpy().ravel()[order]) >= -1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "blur"}, "blur"),
        ({"magnitude": 31}, "magnitude"),
        ({"magnitude": -1}, "magnitude"),
        ({"images": np.zeros((12, 12, 3), "float32")}, "images"),
        ({"images": np.zeros((2, 12, 12, 2), "float32")}, "images"),
        ({"images": np.zeros((2, 12, 12, 3), "uint8")}, "images"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"name": "rotate", "images": np.zeros((2, 12, 12, 3), "float32"), "magnitude": 5}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        transforms.apply(**arguments)
