import keras
import numpy as np
import pytest

import tfpriors
from tfpriors.initializers import DWPInitializer


@pytest.fixture(scope="module")
def vae():
    keras.utils.set_random_seed(0)
    vae = tfpriors.priors.KernelVAE(kernel_size=3, latent_dim=2, hidden_units=16, seed=0)
    # Shifting the decoder's output bias gives its means a known offset to look for.
    last = vae.decoder.layers[-1]
    kernel, bias = last.get_weights()
    bias[:9] = np.linspace(-0.3, 0.3, 9)
    last.set_weights([kernel * 0.1, bias])
    return vae


def test_kernels_are_decoder_means_at_standard_normal_z(vae):
    init = DWPInitializer(vae, seed=3)
    kernel = keras.ops.convert_to_numpy(init((3, 3, 16, 32)))
    assert kernel.shape == (3, 3, 16, 32)
    slices = np.transpose(kernel, (2, 3, 0, 1)).reshape(-1, 3, 3)
    expected = vae.sample(20000, seed=keras.random.SeedGenerator(9))
    np.testing.assert_allclose(slices.mean(0), expected.mean(0), atol=0.02)
    np.testing.assert_allclose(slices.std(0), expected.std(0), rtol=0.25, atol=1e-3)
    # A fresh draw per call; the same seed gives the same draws.
    assert not np.allclose(init((3, 3, 16, 32)), kernel)
    np.testing.assert_array_equal(DWPInitializer(vae, seed=3)((3, 3, 16, 32)), kernel)


def test_noise_draws_from_the_decoder_distribution(vae):
    init = DWPInitializer(vae, seed=4, noise=True)
    slices = np.transpose(keras.ops.convert_to_numpy(init((3, 3, 40, 50))), (2, 3, 0, 1)).reshape(
        -1, 3, 3
    )
    means = np.transpose(
        keras.ops.convert_to_numpy(DWPInitializer(vae, seed=4)((3, 3, 40, 50))), (2, 3, 0, 1)
    ).reshape(-1, 3, 3)
    z = np.random.default_rng(0).normal(size=(4000, 2)).astype("float32")
    decoder_var = np.exp(keras.ops.convert_to_numpy(vae.decode(z)[1])).mean(0)
    np.testing.assert_allclose(slices.var(0), means.var(0) + decoder_var, rtol=0.15)


def test_usable_in_conv2d_and_saved_with_the_model(vae, tmp_path):
    init = DWPInitializer(vae, seed=1)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, kernel_initializer=init)]
    )
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(loaded.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    restored = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(restored, DWPInitializer) and restored.seed == 1
    np.testing.assert_array_equal(
        restored.vae.decoder.get_weights()[-1], vae.decoder.get_weights()[-1]
    )


def test_bad_shapes_and_arguments(vae):
    init = DWPInitializer(vae)
    with pytest.raises(ValueError, match="kernel_size.*match"):
        init((5, 5, 1, 2))
    with pytest.raises(ValueError, match="square"):
        init((3, 2, 1, 2))
    with pytest.raises(ValueError, match="2D convolution kernel"):
        init((9, 4))
    with pytest.raises(TypeError, match="vae"):
        DWPInitializer(None)
    with pytest.raises(TypeError, match="noise"):
        DWPInitializer(vae, noise=1)
    with pytest.raises(TypeError, match="seed"):
        DWPInitializer(vae, seed=1.5)
