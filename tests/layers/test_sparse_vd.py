import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import tfpriors
from tfpriors.layers import SparseVDConv2D, SparseVDDense
from tfpriors.priors.log_uniform import K1, K2, K3


def numpy_kl(theta, log_sigma2):
    """KL of DESIGN.md evaluated directly in NumPy (float64)."""
    log_alpha = np.clip(log_sigma2 - np.log(theta**2 + 1e-8), -8, 8)
    neg_kl = K1 / (1 + np.exp(-(K2 + K3 * log_alpha))) - 0.5 * np.log1p(np.exp(-log_alpha)) - K1
    return -neg_kl.sum()


class SparseVDLayerTest(testing.TestCase):
    def test_dense_layer_harness(self):
        self.run_layer_test(
            SparseVDDense,
            init_kwargs={"units": 5, "activation": "relu", "dataset_size": 100},
            input_shape=(3, 4),
            expected_output_shape=(3, 5),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            expected_num_losses=1,
        )

    def test_dense_layer_harness_rank3_no_bias(self):
        self.run_layer_test(
            SparseVDDense,
            init_kwargs={"units": 2, "use_bias": False, "dataset_size": 10, "threshold": 1.5},
            input_shape=(2, 3, 4),
            expected_output_shape=(2, 3, 2),
            expected_num_trainable_weights=2,
            expected_num_losses=1,
        )

    def test_conv_layer_harness(self):
        for padding, expected in (("same", (2, 6, 6, 3)), ("valid", (2, 4, 4, 3))):
            self.run_layer_test(
                SparseVDConv2D,
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

    def test_conv_layer_harness_strided_channels_first(self):
        self.run_layer_test(
            SparseVDConv2D,
            init_kwargs={
                "filters": 4,
                "kernel_size": (3, 2),
                "strides": 2,
                "padding": "same",
                "data_format": "channels_first",
                "dataset_size": 5,
            },
            input_shape=(2, 3, 7, 6),
            expected_output_shape=(2, 4, 4, 3),
            expected_num_losses=1,
        )

    def test_no_kl_loss_without_dataset_size_in_inference(self):
        layer = SparseVDDense(3)
        layer(np.ones((2, 4), "float32"))
        self.assertEqual(len(layer.losses), 0)


LAYER_CASES = [
    (lambda **kw: SparseVDDense(6, **kw), (5, 4), keras.layers.Dense, {"units": 6}),
    (
        lambda **kw: SparseVDConv2D(3, 3, padding="same", **kw),
        (2, 5, 5, 2),
        keras.layers.Conv2D,
        {"filters": 3, "kernel_size": 3, "padding": "same"},
    ),
]


@pytest.mark.parametrize("make_layer,input_shape,plain_cls,plain_kwargs", LAYER_CASES)
def test_kl_matches_numpy_formula(make_layer, input_shape, plain_cls, plain_kwargs):
    layer = make_layer(dataset_size=7)
    layer.build(input_shape)
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.5, layer.kernel.shape).astype("float32")
    log_sigma2 = rng.uniform(-14, 2, layer.kernel.shape).astype("float32")
    layer.kernel.assign(theta)
    layer.log_sigma2.assign(log_sigma2)
    np.testing.assert_allclose(
        float(layer.kl()),
        numpy_kl(theta.astype("float64"), log_sigma2.astype("float64")),
        rtol=1e-5,
    )
    # The added loss is kl_weight * KL / N.
    layer.kl_weight.assign(0.25)
    layer(np.ones(input_shape, "float32"), training=False)
    np.testing.assert_allclose(float(layer.losses[0]), 0.25 * float(layer.kl()) / 7, rtol=1e-6)


@pytest.mark.parametrize("make_layer,input_shape,plain_cls,plain_kwargs", LAYER_CASES)
def test_finite_gradients_at_clip_boundaries(make_layer, input_shape, plain_cls, plain_kwargs):
    layer = make_layer(dataset_size=3)
    layer.build(input_shape)
    theta = np.full(layer.kernel.shape, 0.1, "float32")
    layer.kernel.assign(theta)
    x = tf.constant(np.random.default_rng(1).normal(size=input_shape).astype("float32"))
    for target in (-8.0, 8.0):
        # log_sigma2 chosen so that log_alpha sits exactly on the clip boundary.
        layer.log_sigma2.assign(
            np.full(layer.kernel.shape, target + np.log(0.01 + 1e-8), "float32")
        )
        with tf.GradientTape() as tape:
            out = layer(x, training=True)
            loss = tf.reduce_sum(out) + tf.add_n(layer.losses)
        grads = tape.gradient(loss, layer.trainable_weights)
        for grad in grads:
            assert np.all(np.isfinite(grad.numpy()))
        assert np.all(np.isfinite(float(layer.kl())))


@pytest.mark.parametrize("make_layer,input_shape,plain_cls,plain_kwargs", LAYER_CASES)
def test_inference_is_pruned_posterior_mean(make_layer, input_shape, plain_cls, plain_kwargs):
    layer = make_layer(dataset_size=10)
    layer.build(input_shape)
    rng = np.random.default_rng(2)
    theta = rng.normal(0, 1, layer.kernel.shape).astype("float32")
    log_alpha = rng.uniform(-6, 6, layer.kernel.shape).astype("float32")
    layer.kernel.assign(theta)
    layer.log_sigma2.assign(log_alpha + np.log(theta**2 + 1e-8))
    plain = plain_cls(**plain_kwargs)
    plain.build(input_shape)
    kept = np.abs(layer.log_alpha().numpy() - log_alpha) < 1e-3
    plain.set_weights([np.where(layer.log_alpha().numpy() < 3.0, theta, 0.0), layer.bias.numpy()])
    x = rng.normal(size=input_shape).astype("float32")
    assert kept.mean() > 0.99
    np.testing.assert_allclose(layer(x), plain(x), atol=1e-5)
    np.testing.assert_array_equal(layer.kept_mask(), layer.log_alpha().numpy() < 3.0)
    # Evaluation is deterministic; training is not.
    np.testing.assert_array_equal(layer(x), layer(x))
    assert not np.allclose(layer(x, training=True), layer(x, training=True))


@pytest.mark.parametrize("make_layer,input_shape,plain_cls,plain_kwargs", LAYER_CASES)
def test_local_reparameterization_moments(make_layer, input_shape, plain_cls, plain_kwargs):
    """Training outputs have mean x@theta and variance (x^2)@(alpha theta^2)."""
    layer = make_layer(use_bias=False, dataset_size=10)
    layer.build(input_shape)
    rng = np.random.default_rng(3)
    layer.log_sigma2.assign(np.full(layer.kernel.shape, -3.0, "float32"))
    x = np.repeat(rng.normal(size=(1,) + input_shape[1:]).astype("float32"), 4000, axis=0)
    samples = layer(x, training=True).numpy()
    mean = layer._linear(x[:1], layer.kernel).numpy()[0]
    var = layer._linear(x[:1] ** 2, tf.exp(layer.log_alpha()) * layer.kernel**2).numpy()[0]
    np.testing.assert_allclose(samples.mean(0), mean, atol=4 * np.sqrt(var.max() / 4000) + 1e-4)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.15, atol=1e-6)


def _small_model(kind):
    if kind == "dense":
        return keras.Sequential(
            [keras.Input((64,)), SparseVDDense(16, activation="relu"), SparseVDDense(10)]
        )
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            SparseVDConv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            SparseVDDense(10),
        ]
    )


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_fit_and_save_load_round_trip(kind, digits, tmp_path):
    (x, y), (x_test, _) = digits
    if kind == "conv":
        x, x_test = x.reshape(-1, 8, 8, 1), x_test.reshape(-1, 8, 8, 1)
    model = _small_model(kind)
    tfpriors.set_dataset_size(model, len(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    assert [layer.dataset_size for layer in tfpriors.layers.kl_layer.kl_layers(loaded)] == [
        len(x)
    ] * 2
    # Training state survives too: the reloaded model keeps training.
    loaded.fit(x[:64], y[:64], epochs=1, verbose=0)


def test_fit_without_dataset_size_fails_at_start(digits):
    (x, y), _ = digits
    model = _small_model("dense")
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tfpriors.layers.DatasetSizeNotSetError, match="set_dataset_size"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert model.layers[0].kernel.numpy().std() > 0  # untouched initial weights
    tfpriors.set_dataset_size(model, len(x))
    model.fit(x[:64], y[:64], epochs=1, verbose=0)


def test_set_dataset_size_after_compile_changes_the_loss(digits):
    (x, y), _ = digits
    model = _small_model("dense")
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tfpriors.set_dataset_size(model, 100)
    small_n = model.evaluate(x[:64], y[:64], verbose=0)
    tfpriors.set_dataset_size(model, 100000)
    large_n = model.evaluate(x[:64], y[:64], verbose=0)
    kl = sum(float(layer.kl()) for layer in model.layers)
    np.testing.assert_allclose(small_n - large_n, kl / 100 - kl / 100000, rtol=1e-4)


@pytest.mark.parametrize(
    "cls,kwargs,match",
    [
        (SparseVDDense, {"units": 0}, "units"),
        (SparseVDDense, {"units": -3}, "units"),
        (SparseVDDense, {"units": 2.5}, "units"),
        (SparseVDDense, {"units": 4, "threshold": "3"}, "threshold"),
        (SparseVDDense, {"units": 4, "threshold": None}, "threshold"),
        (SparseVDDense, {"units": 4, "threshold": 12.0}, "threshold"),
        (SparseVDDense, {"units": 4, "dataset_size": 0}, "dataset_size"),
        (SparseVDDense, {"units": 4, "use_bias": "yes"}, "use_bias"),
        (SparseVDDense, {"units": 4, "log_sigma2_initializer": "nan"}, "log_sigma2_initializer"),
        (SparseVDConv2D, {"filters": 0, "kernel_size": 3}, "filters"),
        (SparseVDConv2D, {"filters": 2, "kernel_size": 0}, "kernel_size"),
        (SparseVDConv2D, {"filters": 2, "kernel_size": (3, 3, 3)}, "kernel_size"),
        (SparseVDConv2D, {"filters": 2, "kernel_size": 3, "padding": "full"}, "padding"),
        (SparseVDConv2D, {"filters": 2, "kernel_size": 3, "padding": "causal"}, "padding"),
        (
            SparseVDConv2D,
            {"filters": 2, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
            "dilation_rate",
        ),
        (SparseVDConv2D, {"filters": 2, "kernel_size": 3, "data_format": "nhwc"}, "data_format"),
    ],
)
def test_bad_arguments_name_the_argument(cls, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "layer,shape",
    [
        (SparseVDDense(3), (4,)),
        (SparseVDConv2D(2, 3), (4, 8, 8)),
        (SparseVDConv2D(2, 3), (4, 8, 8, 1, 1)),
    ],
)
def test_wrong_input_rank_names_inputs(layer, shape):
    with pytest.raises(ValueError, match="inputs.*rank"):
        layer(np.zeros(shape, "float32"))


def test_mixed_precision_training_is_finite(digits):
    (x, y), _ = digits
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            SparseVDDense(16, activation="relu"),
            SparseVDDense(10, dtype="float32"),
        ]
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x[:128], y[:128], epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.layers[0].kernel.dtype == "float32"


def test_fused_terms_gradient_matches_autodiff_of_the_formula():
    from tfpriors.layers.sparse_vd import _FusedTerms
    from tfpriors.priors import LogUniform, log_alpha

    rng = np.random.default_rng(5)
    theta = tf.Variable(rng.normal(0, 0.3, (40, 30)).astype("float32"))
    # Spans both clip boundaries, so the masked gradient is exercised too.
    log_sigma2 = tf.Variable(rng.uniform(-20, 6, (40, 30)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(40, 30)).astype("float32"))

    def loss(variance_kernel, kl):
        return tf.reduce_sum(upstream * variance_kernel) + 0.7 * kl

    with tf.GradientTape() as tape:
        fused = loss(*_FusedTerms().training(theta, log_sigma2))
    fused_grads = tape.gradient(fused, [theta, log_sigma2])
    with tf.GradientTape() as tape:
        la = log_alpha(theta, log_sigma2)
        reference = loss(
            tf.exp(la) * tf.square(theta), tf.reduce_sum(LogUniform().kl_from_log_alpha(la))
        )
    reference_grads = tape.gradient(reference, [theta, log_sigma2])
    np.testing.assert_allclose(float(fused), float(reference), rtol=1e-5)
    for got, want in zip(fused_grads, reference_grads):
        np.testing.assert_allclose(
            got.numpy(), want.numpy(), rtol=2e-4, atol=1e-5 * np.abs(want.numpy()).max()
        )
