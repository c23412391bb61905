import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

from tfpriors.layers import HyperVariationalConv2D, HyperVariationalDense

LAMBDA_RANGE = (1e-3, 10.0)


def numpy_normal_kl(mean, log_sigma2, variance):
    """KL(N(mean, exp(log_sigma2)) || N(0, variance)) summed, in float64."""
    mean, log_sigma2 = mean.astype("float64"), log_sigma2.astype("float64")
    return 0.5 * np.sum(
        np.exp(log_sigma2) / variance + mean**2 / variance - 1.0 - log_sigma2 + np.log(variance)
    )


def normalized(lam):
    low, high = LAMBDA_RANGE
    return (np.log(lam) - np.log(low)) / (np.log(high) - np.log(low))


def numpy_parameters(layer, lam):
    """The layer's (kernel mean, kernel log-variance, bias) at ``lam``, from its weights."""
    w = {v.path.split("/")[-1]: v.numpy().astype("float64") for v in layer.trainable_weights}
    t = normalized(lam)
    out = []
    for name in ("kernel_mean", "kernel_log_sigma2", "bias"):
        if name == "bias" and not layer.use_bias:
            out.append(None)
            continue
        if layer.kind == "linear":
            value = t * w[f"{name}_a"] + (1 - t) * w[f"{name}_b"]
        else:
            h = np.maximum(t * w["hidden_kernel"][0] + w["hidden_bias"], 0.0)
            if name == "bias":
                value = w[f"{name}_c"] + h @ w[f"{name}_head"]
            else:
                rows, cols = w[f"{name}_c"].shape
                a1 = (h @ w[f"{name}_a1"] + w[f"{name}_a1_bias"]).reshape(rows, layer.rank)
                a2 = (h @ w[f"{name}_a2"] + w[f"{name}_a2_bias"]).reshape(cols, layer.rank)
                value = w[f"{name}_c"] + a1 @ a2.T / np.sqrt(rows * cols)
        out.append(value)
    return out


def randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_weights:
        scale = 0.5 if "log_sigma2" not in variable.path else 1.0
        offset = (
            -4.0
            if "log_sigma2" in variable.path and variable.path.endswith(("_a", "_b", "_c"))
            else 0.0
        )
        variable.assign(offset + scale * rng.normal(size=variable.shape).astype("float32"))


class HyperLayerHarnessTest(testing.TestCase):
    def test_dense_linear(self):
        self.run_layer_test(
            HyperVariationalDense,
            init_kwargs={"units": 5, "activation": "relu", "kind": "linear", "dataset_size": 100},
            input_shape=(6, 4),
            expected_output_shape=(6, 5),
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            expected_num_losses=1,
        )

    def test_dense_lowrank_rank3_input(self):
        self.run_layer_test(
            HyperVariationalDense,
            init_kwargs={
                "units": 3,
                "kind": "lowrank",
                "rank": 1,
                "hidden_units": 7,
                "lambda_draws": 3,
                "dataset_size": 10,
            },
            input_shape=(4, 2, 5),
            expected_output_shape=(4, 2, 3),
            expected_num_trainable_weights=14,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            expected_num_losses=1,
        )

    def test_conv(self):
        # One kind here (the harness is slow); the formula tests cover both.
        for kind, padding, expected in (("lowrank", "valid", (5, 4, 4, 3)),):
            self.run_layer_test(
                HyperVariationalConv2D,
                init_kwargs={
                    "filters": 3,
                    "kernel_size": 3,
                    "padding": padding,
                    "kind": kind,
                    "lambda_draws": 2,
                    "dataset_size": 50,
                },
                input_shape=(5, 6, 6, 2),
                expected_output_shape=expected,
                expected_num_non_trainable_weights=1,
                expected_num_seed_generators=1,
                expected_num_losses=1,
            )

    def test_no_kl_without_dataset_size_in_evaluation(self):
        layer = HyperVariationalDense(3)
        layer(np.ones((2, 4), "float32"))
        self.assertEqual(len(layer.losses), 0)


def _dense(kind, **kw):
    return HyperVariationalDense(6, kind=kind, rank=2, hidden_units=5, **kw)


def _conv(kind, **kw):
    return HyperVariationalConv2D(4, 3, padding="same", kind=kind, rank=2, hidden_units=5, **kw)


CASES = [(_dense, (7, 5)), (_conv, (7, 5, 5, 2))]
KINDS = ["linear", "lowrank"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make,input_shape", CASES)
def test_parameters_follow_the_hypernetwork_formula(kind, make, input_shape):
    layer = make(kind)
    layer.build(input_shape)
    randomize(layer)
    lambdas = [1e-3, 0.05, 10.0]
    params = layer.parameters_at(lambdas)
    for d, lam in enumerate(lambdas):
        mean, log_sigma2, bias = numpy_parameters(layer, lam)
        np.testing.assert_allclose(
            params["kernel_mean"][d].numpy().reshape(mean.shape), mean, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            params["kernel_log_sigma2"][d].numpy().reshape(mean.shape),
            log_sigma2,
            rtol=1e-5,
            atol=1e-5,
        )
        np.testing.assert_allclose(params["bias"][d].numpy(), bias, rtol=1e-5, atol=1e-5)
    # The parameters do depend on lambda.
    assert not np.allclose(params["kernel_mean"][0], params["kernel_mean"][2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make,input_shape", CASES)
def test_kl_loss_is_lambda_weighted_mean_over_draws_divided_by_n(kind, make, input_shape):
    n = 37
    layer = make(kind, dataset_size=n, prior_variance=0.1)
    layer.build(input_shape)
    randomize(layer, seed=1)
    layer.kl_weight.assign(0.5)
    lambdas = [2e-3, 0.3, 7.0]
    layer(np.ones(input_shape, "float32"), lambdas=lambdas, training=True)
    expected = (
        0.5
        * np.mean(
            [lam * numpy_normal_kl(*numpy_parameters(layer, lam)[:2], 0.1) for lam in lambdas]
        )
        / n
    )
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), expected, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("make,input_shape", CASES)
def test_groups_of_the_batch_use_their_own_lambda(kind, make, input_shape):
    layer = make(kind)
    layer.build(input_shape)
    randomize(layer, seed=2)
    x = np.random.default_rng(3).normal(size=input_shape).astype("float32")
    lambdas = [1e-3, 0.1, 10.0]
    together = layer(x, lambdas=lambdas).numpy()
    # 7 examples in 3 draws: example i in group i % 3 (groups of 3, 2 and 2).
    for d, lam in enumerate(lambdas):
        np.testing.assert_allclose(
            together[d::3], layer(x[d::3], lambdas=[lam]), rtol=1e-5, atol=1e-5
        )
    # Evaluation without lambdas is the log midpoint of the range.
    np.testing.assert_allclose(layer(x), layer(x, lambdas=[math.sqrt(1e-3 * 10.0)]), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_local_reparameterization_moments(kind):
    layer = HyperVariationalDense(3, kind=kind, use_bias=False, dataset_size=10)
    layer.build((None, 4))
    randomize(layer, seed=4)
    x = np.repeat(np.random.default_rng(5).normal(size=(1, 4)).astype("float32"), 4000, 0)
    lambdas = [0.01, 5.0]
    samples = layer(x, lambdas=lambdas, training=True).numpy()
    for d, lam in enumerate(lambdas):
        mean, log_sigma2, _ = numpy_parameters(layer, lam)
        group = samples[d::2]
        expected_var = (x[0] ** 2) @ np.exp(log_sigma2)
        np.testing.assert_allclose(
            group.mean(0), x[0] @ mean, atol=5 * np.sqrt(expected_var.max() / 2000) + 1e-4
        )
        np.testing.assert_allclose(group.var(0), expected_var, rtol=0.15)


@pytest.mark.parametrize("make,input_shape", CASES)
def test_inference_layer_is_the_mean_forward(make, input_shape):
    layer = make("lowrank")
    layer.build(input_shape)
    randomize(layer, seed=6)
    plain, weights = layer.inference_layer(0.2)
    plain.build(input_shape)
    plain.set_weights(weights)
    x = np.random.default_rng(7).normal(size=input_shape).astype("float32")
    np.testing.assert_allclose(plain(x), layer(x, lambdas=[0.2]), rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_hypernetwork_weight():
    layer = HyperVariationalDense(4, kind="lowrank", dataset_size=10, lambda_draws=3)
    x = tf.constant(np.random.default_rng(8).normal(size=(9, 5)).astype("float32"))
    layer.build(x.shape)
    # a2 starts at zero; one plain SGD step makes it non-zero so that the
    # hidden layer's weights get a gradient too.
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.square(layer(x, training=True))) + tf.add_n(layer.losses)
        grads = tape.gradient(loss, layer.trainable_weights)
        for variable, grad in zip(layer.trainable_weights, grads):
            variable.assign_sub(0.01 * grad)
    assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
    assert all(np.any(g.numpy() != 0) for g in grads)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "quadratic"}, "kind"),
        ({"rank": 0}, "rank"),
        ({"hidden_units": -1}, "hidden_units"),
        ({"lambda_range": (0.0, 1.0)}, "lambda_range"),
        ({"lambda_range": (1.0, 0.1)}, "lambda_range"),
        ({"lambda_range": (1.0,)}, "lambda_range"),
        ({"lambda_draws": 0}, "lambda_draws"),
        ({"prior_variance": 0.0}, "prior_variance"),
        ({"use_bias": "yes"}, "use_bias"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        HyperVariationalDense(3, **kwargs)


def test_bad_conv_arguments():
    with pytest.raises(ValueError, match="data_format"):
        HyperVariationalConv2D(3, 3, data_format="channels_first")
    with pytest.raises(ValueError, match="padding"):
        HyperVariationalConv2D(3, 3, padding="full")
    with pytest.raises(ValueError, match="units"):
        HyperVariationalDense(0)


def test_density_score_rejects_lambda_outside_range():
    layer = HyperVariationalDense(3)
    layer.build((None, 4))
    with pytest.raises(ValueError, match="lambda_value"):
        layer.density_score(20.0)
    score = layer.density_score(1.0)
    assert score.shape == (4, 3) and np.all(score >= 0)


def test_mixed_precision_keeps_parameters_float32():
    layer = HyperVariationalDense(3, kind="lowrank", dtype="mixed_float16", dataset_size=5)
    out = layer(np.ones((4, 2), "float32"), lambdas=[0.1, 1.0], training=True)
    assert out.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)
    assert np.isfinite(float(layer.losses[0]))
    keras.config.set_dtype_policy("float32")
