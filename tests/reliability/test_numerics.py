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
    layer.log_sigma2.assign(log_alpha + np.log(theta ** 2 + 1e-8))
    with tf.GradientTape() as tape:
        kl = layer.kl()
    gradients = tape.gradient(kl, [layer.kernel, layer.log_sigma2])
    assert np.isfinite(float(kl))
    for gradient in gradients:
        assert np.all(np.isfinite(gradient))


def test_sparse_vd_trains_under_mixed_float16_without_nan(digits):
    (x, y), _ = digits
    keras.config.set_dtype_policy("mixed_float16")
    model = keras.Sequential([keras.Input((64,)),
                              tfpriors.layers.SparseVDDense(64, activation="relu"),
                              tfpriors.layers.SparseVDDense(10),
                              keras.layers.Activation("linear", dtype="float32")])
    tfpriors.set_dataset_size(model, len(x))
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(x, y, epochs=3, batch_size=128, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][-1] < history.history["loss"][0]
    for weight in model.get_weights():
        assert np.all(np.isfinite(weight))
