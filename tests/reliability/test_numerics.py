"""KL terms and training stay finite at extreme parameters and in mixed precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfpriors


@pytest.mark.parametrize("log_alpha", [-20.0, 20.0])
def test_sparse_vd_kl_and_gradients_finite_at_extreme_log_alpha(log_alpha):
    layer = tfpriors.layers.SparseVDDense(4)
    layer.build((None, 3))
    theta = np.array([[1e-6, 1.0, 30.0, -2.0]] * 3, "float32")
    layer.kernel.assign(theta)
    # log_sigma2 = log_alpha + log(theta^2): every weight sits at the extreme rate.
    layer.log_sigma2.assign(log_alpha + np.log(theta**2 + 1e-8))
    with tf.GradientTape() as tape:
        kl = layer.kl()
    gradients = tape.gradient(kl, [layer.kernel, layer.log_sigma2])
    assert np.isfinite(float(kl))
    for gradient in gradients:
        assert np.all(np.isfinite(gradient))


def test_sparse_vd_trains_under_mixed_float16_without_nan(digits):
    (x, y), _ = digits
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential(
        [
            keras.Input((64,)),
            tfpriors.layers.SparseVDDense(64, activation="relu"),
            tfpriors.layers.SparseVDDense(10),
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, y, epochs=3, batch_size=128, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    for weight in model.get_weights():
        assert np.all(np.isfinite(weight))


def _adaptive_blocks(model):
    from tfpriors.graph import walk

    return [layer for layer in walk(model) if isinstance(layer, tfpriors.layers.AdaptiveBlock)]


@pytest.mark.parametrize(
    "kind,mode",
    [
        ("act", "relaxed"),
        ("sact", "relaxed"),
        ("pact", "relaxed"),
        ("pact", "discrete"),
        ("pact", "threshold"),
    ],
)
@pytest.mark.parametrize("logit", [-100.0, 100.0])
def test_halting_finite_at_extreme_logits(kind, mode, logit, digits):
    (x, y), _ = digits
    x, y = x[:16].reshape(-1, 8, 8, 1), y[:16]
    model = tfpriors.models.act_resnet(
        (8, 8, 1), 10, blocks=(2, 2), widths=(4, 8), kind=kind, mode=mode
    )
    blocks = _adaptive_blocks(model)
    assert blocks
    for block in blocks:
        for head in block.halting_dense + block.halting_conv:
            if head.bias is not None:
                head.bias.assign(np.full(head.bias.shape, logit, "float32"))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = loss_fn(y, logits) + sum(model.losses)
    gradients = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in gradients if g is not None)
    assert np.all(np.isfinite(model(x, training=False)))


def test_pact_trains_under_mixed_float16_without_nan(digits):
    (x, y), _ = digits
    x, y = x[:256].reshape(-1, 8, 8, 1), y[:256]
    keras.config.set_dtype_policy("mixed_float16")
    model = tfpriors.models.act_resnet(
        (8, 8, 1), 10, blocks=(2, 2), widths=(4, 8), kind="pact", mode="relaxed"
    )
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    for weight in model.get_weights():
        assert np.all(np.isfinite(weight))
    assert np.all(np.isfinite(model.predict(x[:32], verbose=0).astype("float32")))
