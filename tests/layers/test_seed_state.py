import keras
import numpy as np

import tfpriors


def _model():
    model = keras.Sequential([keras.Input((6,)), tfpriors.layers.SparseVDDense(4, seed=3)])
    tfpriors.set_dataset_size(model, 10)
    return model


def test_noise_stream_continues_after_save_and_load(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    model = _model()
    model(x, training=True)  # advance the noise stream past its start
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored(x, training=True), model(x, training=True))


def test_weights_files_without_seed_state_still_load(tmp_path):
    model = _model()
    layer = model.layers[0]
    store = {}
    keras.layers.Layer.save_own_variables(layer, store)  # what plain Keras writes
    fresh = _model()
    fresh.layers[0].load_own_variables(store)
    for a, b in zip(fresh.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
