import keras
import numpy as np
import pytest
from scipy import special

from tfpriors import calibration
from tfpriors.tta import Policy, TTAPredictor


@pytest.fixture(scope="module")
def data():
    import tfpriors

    (x, y), (x_test, y_test) = tfpriors.datasets.load_digits(flat=False)
    return x, y, x_test[:90], y_test[:90]


def _cnn(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )


def test_identity_single_model_is_the_model(data):
    _, _, x, _ = data
    model = _cnn(0)
    probs = TTAPredictor(model, num_samples=3).predict(x, batch_size=32)
    np.testing.assert_allclose(
        probs, special.softmax(model.predict(x, verbose=0), axis=1), atol=1e-6
    )


def test_ensemble_merge_is_the_log_of_the_mean_probability(data):
    _, _, x, _ = data
    members = [_cnn(0), _cnn(1), _cnn(2)]
    log_probs = TTAPredictor(members).predict_log(x, batch_size=25)
    mean = np.mean([special.softmax(m.predict(x, verbose=0), axis=1) for m in members], 0)
    np.testing.assert_allclose(log_probs, np.log(mean), atol=1e-6)


def test_flip_tta_averages_the_two_views(data):
    _, _, x, _ = data
    model = _cnn(3)
    probs = TTAPredictor(model, Policy.flip(), num_samples=400, seed=1).predict(x[:5])
    both = 0.5 * (
        special.softmax(model.predict(x[:5], verbose=0), 1)
        + special.softmax(model.predict(x[:5, :, ::-1], verbose=0), 1)
    )
    # 400 coin flips per image: the mix is within a few percent of 50/50.
    np.testing.assert_allclose(probs, both, atol=0.05)


def test_members_see_different_augmentations():
    seen = []

    def recorder(inputs):
        seen.append(np.array(inputs))
        return np.zeros((len(inputs), 2))

    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    TTAPredictor(
        [recorder, recorder], Policy([[("rotate", 30)]]), num_samples=2, from_logits=True
    ).predict(images)
    assert len(seen) == 2 and not np.allclose(seen[0], seen[1])


def test_evaluate_reports_calibrated_metrics(data):
    x_train, y_train, x, y = data
    model = _cnn(4)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=3, verbose=0)
    predictor = TTAPredictor(model, Policy.flip_crop(5), num_samples=4)
    metrics = predictor.evaluate(x, y)
    assert set(metrics) == {"accuracy", "nll", "calibrated_nll", "ece", "brier"}
    log_probs = predictor.predict_log(x)
    assert metrics["nll"] == pytest.approx(calibration.nll(log_probs, y))
    assert 0.3 < metrics["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"models": []}, "models"),
        ({"num_samples": 0}, "num_samples"),
        ({"policy": "flip"}, "policy"),
        ({"from_logits": 1}, "from_logits"),
    ],
)
def test_bad_arguments(kwargs, match):
    arguments = {"models": _cnn(0)}
    arguments.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        TTAPredictor(**arguments)


def test_bad_inputs():
    predictor = TTAPredictor(_cnn(0), Policy.flip())
    with pytest.raises(ValueError, match="x"):
        predictor.predict(np.zeros((0, 8, 8, 1)))
    with pytest.raises(ValueError, match="NaN"):
        predictor.predict(np.full((2, 8, 8, 1), np.nan))
    with pytest.raises(ValueError, match="images"):
        TTAPredictor(
            keras.Sequential([keras.Input((64,)), keras.layers.Dense(3)]), Policy.flip()
        ).predict(np.zeros((2, 64)))


def test_works_with_models_built_under_a_mirrored_strategy(data):
    import tensorflow as tf

    _, _, x, _ = data
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    with tf.distribute.MirroredStrategy(devices).scope():
        mirrored = _cnn(5)
    plain = _cnn(5)
    plain.set_weights(mirrored.get_weights())
    policy = Policy([[("rotate", 9), ("crop", 9)]])
    np.testing.assert_allclose(
        TTAPredictor(mirrored, policy, num_samples=3, seed=2).predict(x[:20]),
        TTAPredictor(plain, policy, num_samples=3, seed=2).predict(x[:20]),
        atol=1e-6,
    )


def test_spreads_model_calls_over_the_replicas_of_a_strategy(data, monkeypatch):
    import tensorflow as tf

    _, _, x, _ = data
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = _cnn(5)
    plain = _cnn(5)
    plain.set_weights(mirrored.get_weights())
    replica_batches = []
    run = strategy.run

    def counting_run(fn, args=()):
        replica_batches.extend(v.shape[0] for v in strategy.experimental_local_results(args[0]))
        return run(fn, args=args)

    monkeypatch.setattr(strategy, "run", counting_run)
    policy = Policy([[("rotate", 9), ("crop", 9)]])
    # 21 images x 3 samples = 63 rows per call: an odd count exercises the padding.
    distributed = TTAPredictor(
        [mirrored, mirrored], policy, num_samples=3, seed=2, strategy=strategy
    ).predict(x[:21], batch_size=21)
    single = TTAPredictor([plain, plain], policy, num_samples=3, seed=2).predict(
        x[:21], batch_size=21
    )
    np.testing.assert_allclose(distributed, single, atol=1e-6)
    assert replica_batches == [32, 32, 32, 32]  # two members, each split over 2 replicas


def test_rejects_a_strategy_that_is_not_one():
    with pytest.raises(TypeError, match="strategy"):
        TTAPredictor(_cnn(0), strategy="mirrored")
