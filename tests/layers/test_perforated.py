import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import tfpriors
from tfpriors.layers import PerforatedConv2D
from tfpriors.perforation import PerforationMask, uniform_mask


class PerforatedConv2DHarnessTest(testing.TestCase):
    def test_harness(self):
        for padding, expected in (("same", (2, 6, 6, 3)), ("valid", (2, 4, 4, 3))):
            self.run_layer_test(
                PerforatedConv2D,
                init_kwargs={
                    "filters": 3,
                    "kernel_size": 3,
                    "padding": padding,
                    "rate": 0.5,
                    "mask": "grid",
                    "seed": 1,
                },
                input_shape=(2, 6, 6, 2),
                expected_output_shape=expected,
                expected_num_trainable_weights=2,
                expected_num_non_trainable_weights=0,
            )

    def test_harness_strided_no_bias_structure(self):
        self.run_layer_test(
            PerforatedConv2D,
            init_kwargs={
                "filters": 4,
                "kernel_size": (3, 2),
                "strides": 2,
                "padding": "same",
                "rate": 0.75,
                "mask": "structure",
                "use_bias": False,
                "activation": "relu",
            },
            input_shape=(2, 9, 7, 3),
            expected_output_shape=(2, 5, 4, 4),
            expected_num_trainable_weights=1,
        )


def _conv_and_perforated(padding, strides, rate, mask, implementation="auto", seed=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 11, 9, 4)).astype("float32")
    conv = keras.layers.Conv2D(6, 3, strides=strides, padding=padding, activation="relu")
    perf = PerforatedConv2D(
        6,
        3,
        strides=strides,
        padding=padding,
        rate=rate,
        mask=mask,
        activation="relu",
        seed=seed,
        implementation=implementation,
    )
    conv.build(x.shape)
    perf.build(x.shape)
    # Same meaning of kernel and bias: they copy over as they are.
    perf.set_weights([w + 0.1 for w in conv.get_weights()])
    conv.set_weights(perf.get_weights())
    return x, conv, perf


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("strides", [1, 2, (1, 2)])
def test_rate_zero_is_conv2d_exactly(padding, strides):
    x, conv, perf = _conv_and_perforated(padding, strides, 0.0, "uniform")
    np.testing.assert_array_equal(perf(x).numpy(), conv(x).numpy())


@pytest.mark.parametrize("implementation", ["reference", "auto"])
@pytest.mark.parametrize("padding,strides", [("same", 1), ("valid", 2), ("same", (2, 1))])
@pytest.mark.parametrize("mask", ["uniform", "grid", "structure"])
def test_kept_equal_conv_others_equal_nearest(implementation, padding, strides, mask):
    x, conv, perf = _conv_and_perforated(padding, strides, 0.6, mask, implementation)
    expected = conv(x).numpy()
    actual = perf(x).numpy()
    m = perf.mask
    flat_expected = expected.reshape(len(x), m.size, -1)
    flat_actual = actual.reshape(len(x), m.size, -1)
    np.testing.assert_allclose(flat_actual[:, m.kept], flat_expected[:, m.kept], atol=2e-5)
    np.testing.assert_allclose(flat_actual, flat_expected[:, m.nearest], atol=2e-5)
    # A grid has rows x cols points, so its rate is only close on small outputs.
    assert abs(m.rate - 0.6) < (0.1 if mask == "grid" else 1.0 / m.size + 1e-9)
    assert not np.allclose(actual, expected)  # perforation really changed something


def test_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    mask = uniform_mask((4, 3), 0.5, seed=2)
    x = tf.constant(rng.normal(size=(1, 5, 4, 2)))
    kernel = tf.constant(rng.normal(size=(2, 2, 2, 2)))

    @tf.function
    def f(x, kernel):
        return tfpriors.ops.perforated_conv2d(
            x,
            kernel,
            mask.kept,
            mask.fill_index,
            (4, 3),
            (1, 1),
            (0, 0),
            implementation="reference",
        )

    theoretical, numerical = tf.test.compute_gradient(f, [x, kernel])
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=1e-6)


@pytest.mark.usefixtures("fused_op")
def test_fused_gradients_match_finite_differences():
    rng = np.random.default_rng(2)
    mask = uniform_mask((3, 3), 0.4, seed=5)
    x = tf.constant(rng.normal(size=(1, 5, 5, 2)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, 2, 2)).astype("float32"))

    @tf.function
    def f(x, kernel):
        return tfpriors.ops.perforated_conv2d(
            x, kernel, mask.kept, mask.fill_index, (3, 3), (2, 2), (1, 1), implementation="fused"
        )

    theoretical, numerical = tf.test.compute_gradient(f, [x, kernel], delta=1e-2)
    for t, n in zip(theoretical, numerical):
        np.testing.assert_allclose(t, n, atol=5e-3)


def _model(layer_kwargs, seed=0):
    inputs = keras.Input((8, 8, 1))
    h = PerforatedConv2D(8, 3, padding="same", activation="relu", name="conv", **layer_kwargs)(
        inputs
    )
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h))


def test_fit_learns_digits(digits):
    (x, y), (x_test, y_test) = digits
    x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    model = _model({"rate": 0.5, "mask": "grid", "seed": 0})
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    before = model.get_layer("conv").kernel.numpy().copy()
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    assert not np.allclose(before, model.get_layer("conv").kernel.numpy())
    assert model.evaluate(x_test, y_test, verbose=0)[1] > 0.8


@pytest.mark.parametrize("mask", ["uniform", "grid"])
def test_save_load_round_trip_is_exact(tmp_path, mask):
    model = _model({"rate": 0.7, "mask": mask})  # no seed: the mask is random
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    expected = model.predict(x, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert loaded.get_layer("conv").mask == model.get_layer("conv").mask
    assert [w.name for w in loaded.get_layer("conv").trainable_weights] == ["kernel", "bias"]


def test_deterministic_outputs():
    model = _model({"rate": 0.5, "mask": "grid"})
    x = np.ones((2, 8, 8, 1), "float32")
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_mask_object_and_config_round_trip():
    mask = PerforationMask((6, 6), [0, 7, 14, 21, 28, 35])
    layer = PerforatedConv2D(2, 3, padding="same", mask=mask)
    assert layer.effective_rate == mask.rate and layer.rate == 0.0  # the rate passed
    clone = PerforatedConv2D.from_config(layer.get_config())
    assert clone.mask == mask
    layer(np.zeros((1, 6, 6, 1), "float32"))
    with pytest.raises(ValueError, match="outputs of shape"):
        PerforatedConv2D(2, 3, mask=mask)(np.zeros((1, 6, 6, 1), "float32"))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"filters": 0}, ValueError, "filters"),
        ({"rate": 1.0}, ValueError, "rate"),
        ({"rate": -0.1}, ValueError, "rate"),
        ({"rate": "half"}, TypeError, "rate"),
        ({"mask": "checkerboard"}, ValueError, "mask"),
        ({"mask": 3}, TypeError, "mask"),
        ({"padding": "full"}, ValueError, "padding"),
        ({"dilation_rate": 2}, ValueError, "dilation_rate"),
        ({"data_format": "channels_first"}, ValueError, "data_format"),
        ({"implementation": "cuda"}, ValueError, "implementation"),
        ({"use_bias": "yes"}, TypeError, "use_bias"),
        ({"seed": -1}, ValueError, "seed"),
        ({"mask": PerforationMask((4, 4), [0, 1]), "rate": 0.2}, ValueError, "rate"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(error, match=match):
        PerforatedConv2D(**args)


def test_impact_mask_needs_data_and_unknown_sizes_are_refused():
    with pytest.raises(ValueError, match="impact"):
        PerforatedConv2D(2, 3, rate=0.5, mask="impact")(np.zeros((1, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match="known height"):
        keras.Sequential([keras.Input((None, None, 1)), PerforatedConv2D(2, 3, rate=0.5)])


def test_saved_config_is_what_the_user_passed_and_restores_the_built_mask(tmp_path):
    layer = PerforatedConv2D(4, 3, padding="same", rate=0.5, mask="grid", seed=3, name="conv")
    inputs = keras.Input((16, 16, 2))
    model = keras.Model(inputs, layer(inputs))
    config = layer.get_config()
    assert config["rate"] == 0.5 and config["mask"] == "grid"  # as passed
    assert layer.effective_rate == pytest.approx(0.484375)  # a 12 x 11 grid
    assert config["built_mask"]["kept"] == layer.mask.kept.tolist()
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").get_layer("conv")
    assert loaded.rate == 0.5 and loaded.mask == layer.mask
    with pytest.raises(TypeError, match="built_mask"):
        PerforatedConv2D(4, 3, built_mask="grid")
