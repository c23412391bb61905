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


# --- from_logits: True, False or "auto" (the default) --------------------------


def _softmax_endings():
    """Models that output probabilities, each ending in a softmax differently."""

    def body():
        inputs = keras.Input((8, 8, 1))
        return inputs, keras.layers.Flatten()(inputs)

    inputs, h = body()
    dense = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    inputs, h = body()
    layer = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(10)(h)))
    inputs, h = body()
    activation = keras.Model(inputs, keras.layers.Activation("softmax")(keras.layers.Dense(10)(h)))
    inputs, h = body()
    op = keras.Model(inputs, keras.ops.softmax(keras.layers.Dense(10)(h)))
    nested = keras.Sequential([keras.Input((8, 8, 1)), _cnn(0), keras.layers.Softmax()])
    inputs, h = body()
    dropout = keras.Model(
        inputs, keras.layers.Dropout(0.5)(keras.layers.Dense(10, activation="softmax")(h))
    )
    return {
        "dense": dense,
        "softmax_layer": layer,
        "activation": activation,
        "ops_softmax": op,
        "nested": nested,
        "dropout": dropout,
    }


@pytest.mark.parametrize("ending", sorted(_softmax_endings()))
def test_a_model_ending_in_softmax_is_read_as_probabilities(data, ending):
    _, _, x, _ = data
    model = _softmax_endings()[ending]
    probs = TTAPredictor(model, num_samples=1).predict(x[:20])
    np.testing.assert_allclose(probs, model.predict(x[:20], verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"`from_logits=True`.*softmax.*from_logits=False"):
        TTAPredictor(model, from_logits=True)


def test_softmax_model_metrics_match_the_hand_computed_ones(trained_cnn):
    """The issue's case: a trained softmax model's NLL and ECE, not flattened ones."""
    logits_model, _, _, x, y = trained_cnn
    model = keras.Sequential([keras.Input((8, 8, 1)), logits_model, keras.layers.Softmax()])
    metrics = TTAPredictor(model, num_samples=1).evaluate(x, y, bins=10)
    probs = model.predict(x, verbose=0).astype("float64")
    rows = np.arange(len(y))
    nll = -np.mean(np.log(probs[rows, y]))
    confidence, correct = probs.max(1), probs.argmax(1) == y
    bins = np.clip(np.ceil(confidence * 10).astype(int) - 1, 0, 9)  # (0.1, 0.2] is bin 1
    ece = sum(
        np.sum(bins == b) * abs(confidence[bins == b].mean() - correct[bins == b].mean())
        for b in np.unique(bins)
    ) / len(y)
    assert metrics["nll"] == pytest.approx(nll, rel=1e-5)
    assert metrics["ece"] == pytest.approx(ece, abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(correct.mean())
    # What the old default (from_logits=True) computed: softmax of the probabilities.
    flattened = special.softmax(probs, axis=1)
    assert flattened.max(1).mean() < 0.5 < confidence.mean()
    assert -np.mean(np.log(flattened[rows, y])) > 2 * nll


def test_auto_on_a_logits_model_is_from_logits_true(data):
    _, _, x, _ = data
    members = [_cnn(0), _cnn(1)]
    policy = Policy.flip()
    auto = TTAPredictor(members, policy, num_samples=2).predict_log(x, batch_size=40)
    explicit = TTAPredictor(members, policy, num_samples=2, from_logits=True).predict_log(
        x, batch_size=40
    )
    np.testing.assert_array_equal(auto, explicit)


def _callable(kind):
    """A plain callable (no layers to inspect): its outputs decide."""
    weights = np.random.default_rng(0).normal(size=(64, 4))

    def model(inputs):
        logits = np.reshape(np.asarray(inputs), (len(inputs), -1)) @ weights
        return special.softmax(logits, axis=1) if kind == "probabilities" else logits

    return model


def test_auto_reads_the_rows_of_a_model_it_cannot_inspect(data):
    _, _, x, _ = data
    np.testing.assert_allclose(
        TTAPredictor(_callable("probabilities"), num_samples=1).predict(x, batch_size=32),
        _callable("probabilities")(x),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        TTAPredictor(_callable("logits"), num_samples=1).predict(x, batch_size=32),
        special.softmax(_callable("logits")(x), axis=1),
        atol=1e-12,
    )


def test_explicit_from_logits_that_contradicts_the_outputs_is_refused(data):
    _, _, x, _ = data
    with pytest.raises(ValueError, match=r"`from_logits=True`.*probabilit.*from_logits=False"):
        TTAPredictor(_callable("probabilities"), from_logits=True).predict(x[:4])
    with pytest.raises(ValueError, match=r"`from_logits=False`.*not probabilities"):
        TTAPredictor(_callable("logits"), from_logits=False).predict(x[:4])
    with pytest.raises(ValueError, match=r"`from_logits=False`.*not probabilities"):
        TTAPredictor(_cnn(0), from_logits=False).predict(x[:4])


@pytest.mark.parametrize("value", ["yes", "Auto", None, 1, 0.5])
def test_bad_from_logits_names_the_accepted_values(value):
    with pytest.raises((ValueError, TypeError), match=r'`from_logits` must be True.*"auto"'):
        TTAPredictor(_cnn(0), from_logits=value)


def test_policy_search_reads_a_softmax_model_as_its_logits_twin(data):
    from tfpriors.tta import GreedyPolicySearch

    _, _, x, y = data
    logits_model = _cnn(6)
    softmax_model = keras.Sequential([keras.Input((8, 8, 1)), logits_model, keras.layers.Softmax()])
    histories = []
    for model in (logits_model, softmax_model):
        search = GreedyPolicySearch(pool_size=3, policy_length=2, calibration_splits=1, seed=0)
        search.fit(model, x[:40], y[:40], verbose=0)
        histories.append(search.history)
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-4)
    with pytest.raises((ValueError, TypeError), match="from_logits"):
        search.fit(softmax_model, x[:40], y[:40], verbose=0, from_logits="probabilities")
