import keras
import numpy as np
import pytest

from tfpriors import tta


@pytest.fixture(scope="module")
def setup(trained_cnn):
    return trained_cnn


def test_identity_gives_the_central_embedding(setup):
    model, x, *_ = setup
    central = tta.mean_embeddings(model, "features", x[:20], tta.Policy.identity(), 3)
    reference = keras.Model(model.inputs[0], model.get_layer("features").output).predict(
        x[:20], verbose=0
    )
    np.testing.assert_allclose(central, reference, atol=1e-5)


def test_mean_embedding_is_the_mean_over_augmented_copies(setup):
    model, x, *_ = setup
    flip_only = tta.mean_embeddings(model, "flatten", x[:5], tta.Policy.flip(), 300, seed=1)
    features = keras.Model(model.inputs[0], model.get_layer("flatten").output)
    both = 0.5 * (features.predict(x[:5], verbose=0) + features.predict(x[:5, :, ::-1], verbose=0))
    np.testing.assert_allclose(flip_only, both, atol=0.1 * np.abs(both).max())
    assert flip_only.shape == (5, 4 * 4 * 32)


def test_linear_probe_scores_embeddings(setup):
    model, x, y, x_test, y_test = setup
    train = tta.mean_embeddings(model, "features", x, tta.Policy.flip_crop(5), 4)
    test = tta.mean_embeddings(model, "features", x_test, tta.Policy.flip_crop(5), 4)
    accuracy = tta.linear_probe(train, y, test, y_test)
    noise = np.random.default_rng(0).normal(size=train.shape)
    chance = tta.linear_probe(noise, y, np.random.default_rng(1).normal(size=test.shape), y_test)
    assert accuracy > 0.6 and chance < 0.3


def test_bad_arguments(setup):
    model, x, *_ = setup
    with pytest.raises(ValueError, match="layer"):
        tta.mean_embeddings(model, "nope", x[:2])
    with pytest.raises(ValueError, match="num_samples"):
        tta.mean_embeddings(model, "features", x[:2], num_samples=0)
    with pytest.raises(TypeError, match="policy"):
        tta.mean_embeddings(model, "features", x[:2], policy="flip")
    with pytest.raises(TypeError, match="model"):
        tta.mean_embeddings("model.keras", "features", x[:2])
