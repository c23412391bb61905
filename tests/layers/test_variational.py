import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from keras.src import testing

import tfpriors
from tfpriors.layers import VariationalConv2D, VariationalDense
from tfpriors.priors import LearnedGaussian, LogUniform, Normal


class VariationalLayerTest(testing.TestCase):
    def test_dense_layer_harness(self):
        for prior in ("normal", "log_uniform", LearnedGaussian(zero_mean=True)):
            self.run_layer_test(
                VariationalDense,
                init_kwargs={"units": 5, "prior": prior, "activation": "relu", "dataset_size": 100},
                input_shape=(3, 4),
                expected_output_shape=(3, 5),
                expected_num_trainable_weights=3,
                expected_num_non_trainable_weights=1,
                expected_num_seed_generators=1,
                expected_num_losses=1,
            )

    def test_conv_layer_harness(self):
        for padding, expected in (("same", (2, 6, 6, 3)), ("valid", (2, 4, 4, 3))):
            self.run_layer_test(
                VariationalConv2D,
                init_kwargs={
                    "filters": 3,
                    "kernel_size": 3,
                    "padding": padding,
                    "dataset_size": 50,
                },
                input_shape=(2, 6, 6, 2),
                expected_output_shape=expected,
                expected_num_trainable_weights=3,
                expected_num_non_trainable_weights=1,
                expected_num_seed_generators=1,
                expected_num_losses=1,
            )

    def test_conv_layer_harness_strided_no_bias(self):
        self.run_layer_test(
            VariationalConv2D,
            init_kwargs={
                "filters": 4,
                "kernel_size": (3, 2),
                "strides": 2,
                "padding": "same",
                "use_bias": False,
                "prior": "log_uniform",
                "dataset_size": 5,
            },
            input_shape=(2, 7, 6, 3),
            expected_output_shape=(2, 4, 3, 4),
            expected_num_trainable_weights=2,
            expected_num_losses=1,
        )


CASES = [
    (lambda **kw: VariationalDense(6, **kw), (5, 4), keras.layers.Dense),
    (lambda **kw: VariationalConv2D(3, 3, padding="same", **kw), (2, 5, 5, 2), keras.layers.Conv2D),
]


@pytest.mark.parametrize("make_layer,input_shape,plain_cls", CASES)
def test_normal_prior_kl_matches_tfp_and_is_added_scaled(make_layer, input_shape, plain_cls):
    layer = make_layer(dataset_size=7)
    layer.build(input_shape)
    rng = np.random.default_rng(0)
    mean = rng.normal(0, 0.5, layer.kernel.shape).astype("float32")
    log_sigma2 = rng.uniform(-12, 1, layer.kernel.shape).astype("float32")
    layer.kernel.assign(mean)
    layer.log_sigma2.assign(log_sigma2)
    expected = (
        tfp.distributions.kl_divergence(
            tfp.distributions.Normal(
                mean.astype("float64"), np.exp(0.5 * log_sigma2.astype("float64"))
            ),
            tfp.distributions.Normal(np.float64(0.0), np.float64(1.0)),
        )
        .numpy()
        .sum()
    )
    np.testing.assert_allclose(float(layer.kl()), expected, rtol=1e-5)
    layer.kl_weight.assign(0.5)
    layer(np.ones(input_shape, "float32"), training=False)
    np.testing.assert_allclose(float(layer.losses[0]), 0.5 * expected / 7, rtol=1e-5)


def test_posterior_log_variance_starts_at_minus_10():
    layer = VariationalDense(3)
    layer.build((None, 4))
    np.testing.assert_array_equal(layer.log_sigma2.numpy(), -10.0)


@pytest.mark.parametrize("make_layer,input_shape,plain_cls", CASES)
def test_evaluation_is_the_posterior_mean_and_export_form_matches(
    make_layer, input_shape, plain_cls
):
    layer = make_layer(dataset_size=10)
    layer.build(input_shape)
    rng = np.random.default_rng(2)
    layer.log_sigma2.assign(np.full(layer.kernel.shape, -1.0, "float32"))
    layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    x = rng.normal(size=input_shape).astype("float32")
    plain, weights = layer.inference_layer()
    assert isinstance(plain, plain_cls)
    plain.build(input_shape)
    plain.set_weights(weights)
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-5)
    np.testing.assert_array_equal(layer(x), layer(x))
    assert not np.allclose(layer(x, training=True), layer(x, training=True))


@pytest.mark.parametrize("make_layer,input_shape,plain_cls", CASES)
def test_local_reparameterization_moments(make_layer, input_shape, plain_cls):
    layer = make_layer(use_bias=False, dataset_size=10)
    layer.build(input_shape)
    layer.log_sigma2.assign(np.full(layer.kernel.shape, -3.0, "float32"))
    rng = np.random.default_rng(3)
    x = np.repeat(rng.normal(size=(1,) + input_shape[1:]).astype("float32"), 4000, axis=0)
    samples = layer(x, training=True).numpy()
    mean = layer._linear(x[:1], layer.kernel).numpy()[0]
    var = layer._linear(x[:1] ** 2, tf.exp(layer.log_sigma2)).numpy()[0]
    np.testing.assert_allclose(samples.mean(0), mean, atol=4 * np.sqrt(var.max() / 4000) + 1e-4)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.15, atol=1e-6)


def _conv_model(prior="normal"):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            VariationalConv2D(4, 3, prior=prior, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            VariationalDense(10, prior=prior),
        ]
    )


@pytest.mark.parametrize("prior", ["normal", LearnedGaussian()])
def test_fit_save_load_and_tflite_export(prior, digits, tmp_path):
    (x, y), (x_test, _) = digits
    x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    model = _conv_model(prior)
    assert tfpriors.set_dataset_size(model, len(x)) == 2
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:256], y[:256], epochs=2, batch_size=128, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[0].prior) is type(model.layers[0].prior)
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    if prior == "normal":
        report = tfpriors.export.to_tflite(
            model,
            tmp_path / "m.tflite",
            verify_data=x_test[:16],
            latency_repeats=2,
            compare_dense=False,
        )
        assert report.max_abs_diff < 1e-4


def test_fit_without_dataset_size_fails(digits):
    (x, y), _ = digits
    model = keras.Sequential([keras.Input((64,)), VariationalDense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tfpriors.layers.DatasetSizeNotSetError, match="set_dataset_size"):
        model.fit(x[:32], y[:32], epochs=1, verbose=0)


def test_prior_argument_resolution():
    assert isinstance(VariationalDense(2).prior, Normal)
    assert VariationalDense(2).prior.variance == 1.0
    assert isinstance(VariationalDense(2, prior="log_uniform").prior, LogUniform)
    prior = Normal(0.3)
    assert VariationalConv2D(2, 3, prior=prior).prior is prior


@pytest.mark.parametrize(
    "cls,kwargs,error,match",
    [
        (VariationalDense, {"units": 2, "prior": "laplace"}, ValueError, "prior"),
        (VariationalDense, {"units": 2, "prior": 3.0}, TypeError, "prior"),
        (VariationalDense, {"units": 0}, ValueError, "units"),
        (VariationalDense, {"units": 2, "use_bias": "no"}, TypeError, "use_bias"),
        (
            VariationalDense,
            {"units": 2, "log_sigma2_initializer": "nan"},
            ValueError,
            "log_sigma2_initializer",
        ),
        (VariationalDense, {"units": 2, "dataset_size": -1}, ValueError, "dataset_size"),
        (VariationalConv2D, {"filters": 2, "kernel_size": 0}, ValueError, "kernel_size"),
        (
            VariationalConv2D,
            {"filters": 2, "kernel_size": 3, "padding": "full"},
            ValueError,
            "padding",
        ),
        (
            VariationalConv2D,
            {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
            ValueError,
            "dilation_rate",
        ),
    ],
)
def test_bad_arguments_name_the_argument(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "layer,shape", [(VariationalDense(3), (4,)), (VariationalConv2D(2, 3), (4, 8, 8))]
)
def test_wrong_input_rank_names_inputs(layer, shape):
    with pytest.raises(ValueError, match="inputs.*rank"):
        layer(np.zeros(shape, "float32"))
