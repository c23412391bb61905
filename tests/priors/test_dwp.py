import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src import testing

import tfpriors
from tfpriors.layers import VariationalConv2D, VariationalDense
from tfpriors.priors import DeepWeightPrior, KernelVAE, collect_kernels, plot_kernels
from tfpriors.priors.kernel_vae import kernel_slices

# -- KernelVAE -------------------------------------------------------------------------


def test_vae_fit_lowers_its_negative_elbo(trained_vae, source_kernels):
    losses = trained_vae.losses_during_fit
    assert losses[-1] < losses[0] - 5.0
    # The loss is the mean per-slice negative ELBO that calling the model returns.
    evaluated = trained_vae.evaluate(source_kernels, batch_size=3000, verbose=0)
    expected = float(np.mean(trained_vae(source_kernels)))
    assert abs(evaluated - expected) < 1e-3 * max(1.0, abs(expected))


def test_trained_vae_models_the_kernels(trained_vae, source_kernels):
    # Source kernels are far more likely under the VAE than shuffled-pixel ones.
    rng = np.random.default_rng(0)
    shuffled = rng.permuted(source_kernels.reshape(len(source_kernels), 9), axis=1)
    real = float(np.mean(trained_vae(source_kernels[:500])))
    fake = float(np.mean(trained_vae(shuffled[:500].reshape(-1, 3, 3))))
    assert real < fake - 2.0
    samples = trained_vae.sample(500, seed=keras.random.SeedGenerator(0))
    assert samples.shape == (500, 3, 3)
    np.testing.assert_allclose(np.abs(samples).mean(), np.abs(source_kernels).mean(), rtol=0.5)


def test_vae_save_load_round_trip(trained_vae, source_kernels, tmp_path):
    trained_vae.save(tmp_path / "vae.keras")
    loaded = keras.models.load_model(tmp_path / "vae.keras")
    assert isinstance(loaded, KernelVAE) and loaded.get_config() == trained_vae.get_config()
    np.testing.assert_array_equal(loaded(source_kernels[:50]), trained_vae(source_kernels[:50]))
    loaded.fit(source_kernels[:100], epochs=1, verbose=0)  # still compiled and trainable


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel_size": 0}, "kernel_size"),
        ({"latent_dim": 1.5}, "latent_dim"),
        ({"hidden_units": -1}, "hidden_units"),
        ({"min_log_variance": float("nan")}, "min_log_variance"),
    ],
)
def test_vae_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        KernelVAE(**kwargs)


def test_vae_rejects_wrong_kernel_shape(trained_vae):
    with pytest.raises(ValueError, match="inputs.*3, 3"):
        trained_vae(np.zeros((4, 5, 5), "float32"))
    with pytest.raises(ValueError, match="kernels.*3, 3"):
        trained_vae.encode(np.zeros((4, 5, 5), "float32"))


# -- DeepWeightPrior -------------------------------------------------------------------


def _posterior(prior_vae, kind, shape=(3, 3, 4, 6), seed=0):
    rng = np.random.default_rng(seed)
    count = shape[2] * shape[3]
    if kind == "decoder":
        slices = prior_vae.sample(count, seed=keras.random.SeedGenerator(seed))
    else:  # same scale, no structure
        slices = rng.normal(0, 0.2, (count, 3, 3)).astype("float32")
    mean = np.transpose(slices.reshape(shape[2], shape[3], 3, 3), (2, 3, 0, 1))
    return mean.astype("float32"), np.full(shape, -6.0, "float32")


def test_bound_is_finite_with_gradients_for_mean_and_log_sigma2(trained_vae):
    prior = DeepWeightPrior(trained_vae, seed=0)
    mean, log_sigma2 = (tf.Variable(v) for v in _posterior(trained_vae, "random"))
    with tf.GradientTape() as tape:
        kl = prior.kl(mean, log_sigma2)
    grads = tape.gradient(kl, [mean, log_sigma2])
    assert np.isfinite(float(kl))
    for grad in grads:
        assert np.all(np.isfinite(grad.numpy())) and np.abs(grad.numpy()).mean() > 0
    # The entropy term alone gives -0.5 per weight; the likelihood term must act too.
    assert not np.allclose(grads[1].numpy(), -0.5)


def test_bound_decreases_towards_decoder_samples(trained_vae):
    prior = DeepWeightPrior(trained_vae, seed=0)

    def average_bound(kind):
        return np.mean([float(prior.kl(*_posterior(trained_vae, kind, seed=s))) for s in range(5)])

    near, far = average_bound("decoder"), average_bound("random")
    assert near < far
    # Moving a random posterior's means towards decoder samples lowers the bound too.
    random_mean, log_sigma2 = _posterior(trained_vae, "random")
    decoder_mean, _ = _posterior(trained_vae, "decoder")
    halfway = 0.5 * (random_mean + decoder_mean)
    bound = np.mean([float(prior.kl(halfway, log_sigma2)) for _ in range(5)])
    assert near < bound < far


def test_bound_batches_one_slice_per_channel_pair(trained_vae):
    kernel = np.arange(3 * 3 * 2 * 4, dtype="float32").reshape(3, 3, 2, 4)
    slices = kernel_slices(kernel).numpy()
    assert slices.shape == (8, 3, 3)
    np.testing.assert_array_equal(slices[1 * 4 + 2], kernel[:, :, 1, 2])


class DWPLayerTest(testing.TestCase):
    def test_conv_layer_harness_with_dwp(self):
        vae = KernelVAE(kernel_size=3, latent_dim=2, hidden_units=8, seed=0)
        self.run_layer_test(
            VariationalConv2D,
            init_kwargs={
                "filters": 3,
                "kernel_size": 3,
                "padding": "same",
                "prior": DeepWeightPrior(vae, seed=1),
                "dataset_size": 50,
            },
            input_shape=(2, 5, 5, 2),
            expected_output_shape=(2, 5, 5, 3),
            expected_num_trainable_weights=3,
            expected_num_non_trainable_weights=1,
            expected_num_seed_generators=1,
            expected_num_losses=1,
        )


def test_dwp_model_fit_and_save_load(trained_vae, digits, tmp_path):
    (x, y), (x_test, _) = digits
    x, y, x_test = x.reshape(-1, 8, 8, 1)[:128], y[:128], x_test.reshape(-1, 8, 8, 1)[:64]
    prior = DeepWeightPrior(trained_vae, seed=3)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            VariationalConv2D(4, 3, prior=prior, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            VariationalDense(10),
        ]
    )
    tfpriors.set_dataset_size(model, len(x))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    vae_weights = [w.copy() for w in trained_vae.get_weights()]
    history = model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # The encoder and decoder are frozen: training the target leaves them alone.
    for before, after in zip(vae_weights, trained_vae.get_weights()):
        np.testing.assert_array_equal(before, after)
    model.save(tmp_path / "dwp.keras")
    loaded = keras.models.load_model(tmp_path / "dwp.keras")
    loaded_prior = loaded.layers[0].prior
    assert isinstance(loaded_prior, DeepWeightPrior) and loaded_prior.vae is not trained_vae
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    probe = trained_vae.sample(8, seed=keras.random.SeedGenerator(5))
    np.testing.assert_array_equal(loaded_prior.vae(probe), trained_vae(probe))


def test_dwp_shape_errors(trained_vae):
    prior = DeepWeightPrior(trained_vae)
    with pytest.raises(ValueError, match="kernel_size.*match"):
        VariationalConv2D(2, 5, prior=prior).build((None, 8, 8, 1))
    with pytest.raises(ValueError, match="square.*kernel_size"):
        VariationalConv2D(2, (3, 1), prior=prior).build((None, 8, 8, 1))
    with pytest.raises(ValueError, match="2D convolution kernel"):
        VariationalDense(2, prior=prior).build((None, 9))
    with pytest.raises(TypeError, match="vae"):
        DeepWeightPrior("vae.keras")


# -- collect_kernels, plot_kernels -----------------------------------------------------


def test_collect_kernels_takes_every_matching_slice():
    inner = keras.Sequential([keras.Input((6, 6, 4)), keras.layers.Conv2D(3, 3)])
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3),
            inner,
            keras.layers.Conv2D(2, 1),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    kernels = collect_kernels([model], kernel_size=3)
    assert kernels.dtype == np.float32 and kernels.shape == (2 * 4 + 4 * 3, 3, 3)
    first = model.layers[0].kernel.numpy()
    np.testing.assert_array_equal(kernels[1 * 4 + 3], first[:, :, 1, 3])
    assert collect_kernels(model, kernel_size=1).shape == (3 * 2, 1, 1)


def test_collect_kernels_errors():
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 5)])
    with pytest.raises(ValueError, match="no 3x3 conv kernels.*none"):
        collect_kernels(dense)
    with pytest.raises(ValueError, match="kernel_size.*5x5"):
        collect_kernels([conv], kernel_size=3)
    with pytest.raises(ValueError, match="source_models.*empty"):
        collect_kernels([])
    with pytest.raises(TypeError, match="source_models"):
        collect_kernels([np.zeros(3)])
    with pytest.raises(ValueError, match="kernel_size"):
        collect_kernels(conv, kernel_size=0)


def test_plot_kernels_writes_a_png(trained_vae, source_kernels, tmp_path):
    path = tmp_path / "kernels.png"
    plot_kernels(trained_vae, source_kernels, path, num_kernels=36)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size < 300_000
    with pytest.raises(ValueError, match="real_kernels.*kernel_size=3"):
        plot_kernels(trained_vae, np.zeros((4, 5, 5)), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="real_kernels.*empty"):
        plot_kernels(trained_vae, np.zeros((0, 3, 3)), tmp_path / "bad.png")
