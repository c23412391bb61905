"""The compiled augmentation and model calls behind TTAPredictor."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpriors.tta import Policy, TTAPredictor, _compiled, transforms


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")


def _augment(images, subpolicies, seed=(0, 0)):
    indices, bounds = _compiled.encode(subpolicies)
    return _compiled.augment_draws(
        tf.constant(images), indices, bounds, tf.constant(seed, tf.int32)
    ).numpy()


@pytest.mark.parametrize("name", ["autocontrast", "equalize", "invert", "solarize", "posterize"])
def test_deterministic_ops_match_the_eager_transform(images, name):
    # These ops draw no randomness at magnitude 0 (the value is then fixed).
    compiled = _augment(images, [[(name, 0.0)]])
    eager = transforms.apply(name, images, 0.0, seed=0).numpy()
    np.testing.assert_allclose(compiled, eager, atol=1e-6)


def test_each_draw_takes_its_own_subpolicy_in_draw_major_order(images):
    out = _augment(images, [[("invert", 0.0)], [], [("autocontrast", 0.0), ("invert", 0.0)]])
    n = len(images)
    assert out.shape == (3 * n, 8, 8, 1)
    np.testing.assert_allclose(out[:n], 1.0 - images, atol=1e-6)
    np.testing.assert_array_equal(out[n : 2 * n], images)
    autocontrast = transforms.apply("autocontrast", images, 0.0).numpy()
    np.testing.assert_allclose(out[2 * n :], 1.0 - autocontrast, atol=1e-6)


def test_random_magnitudes_are_per_image_and_follow_the_seed(images):
    same = np.repeat(images[:1], 4, axis=0)
    first = _augment(same, [[("rotate", 30.0)]], seed=(1, 0))
    # One image, four copies: each copy gets its own angle.
    assert all(not np.allclose(first[0], first[i]) for i in range(1, 4))
    np.testing.assert_array_equal(first, _augment(same, [[("rotate", 30.0)]], seed=(1, 0)))
    assert not np.allclose(first, _augment(same, [[("rotate", 30.0)]], seed=(2, 0)))


def test_zero_bound_geometry_is_the_identity(images):
    out = _augment(images, [[("rotate", 0.0), ("translate_x", 0.0)]])
    np.testing.assert_allclose(out, images, atol=1e-5)


def test_graph_call_is_the_model_and_cached(images):
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    call = _compiled.graph_call(model)
    np.testing.assert_allclose(call(images), model(images), atol=1e-6)
    traced = _compiled._GRAPH_CALLS[model]
    _compiled.graph_call(model)(images)
    assert _compiled._GRAPH_CALLS[model] is traced  # one traced function per model
    assert traced.experimental_get_tracing_count() == 1


def test_identity_policy_calls_each_member_once_per_batch(images):
    calls = []

    def member(inputs):
        calls.append(len(inputs))
        return np.tile(np.arange(3.0), (len(inputs), 1))

    probs = TTAPredictor(member, num_samples=5, from_logits=True).predict(images, batch_size=4)
    assert calls == [4, 2]  # not 5 identical copies of each batch
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_every_policy_draw_goes_through_the_member(images):
    calls = []

    def member(inputs):
        calls.append(np.array(inputs))
        return np.zeros((len(inputs), 2))

    TTAPredictor(member, Policy([[("invert", 0)], []]), num_samples=4, from_logits=True).predict(
        images
    )
    (seen,) = calls
    n = len(images)
    np.testing.assert_allclose(seen[:n], 1.0 - images, atol=1e-6)  # draw 0: invert
    np.testing.assert_array_equal(seen[n : 2 * n], images)  # draw 1: identity
    np.testing.assert_allclose(seen[2 * n : 3 * n], 1.0 - images, atol=1e-6)


def test_one_subpolicy_for_every_draw_takes_the_whole_stack_path(images):
    out = _augment(images, [[("invert", 0.0), ("rotate", 0.0)]] * 3)
    assert (True, 2, (8, 8, 1)) in _compiled._AUGMENTERS  # the uniform graph
    np.testing.assert_allclose(out, np.tile(1.0 - images, (3, 1, 1, 1)), atol=1e-5)
    rotated = _augment(images, [[("rotate", 30.0)]] * 2, seed=(3, 0))
    assert not np.allclose(rotated[: len(images)], rotated[len(images) :])  # draws differ
